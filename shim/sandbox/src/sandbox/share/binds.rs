//! Which of a spec's mounts come from the host, and where the guest finds them in the share.
//!
//! A bind mount (`type: bind`, or a `bind`/`rbind` option) names a host path: the host binds it
//! into the share at create, and the spec the agent gets names the guest path of that copy. Every
//! other mount (proc, tmpfs, devpts, ...) is made by the guest kernel and stays as it is.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, Spec};
use rust_vm_protocol::GUEST_SHARE_DIR;

/// One host path to bind into the share for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBind {
    /// Its index in the spec's `mounts`: errors name it, and it names the share entry.
    pub index: usize,
    pub destination: PathBuf,
    /// The host path (a relative source is the bundle's, as runc reads it).
    pub source: PathBuf,
    pub read_only: bool,
    /// `rbind`: the mounts below the source come too.
    pub recursive: bool,
}

impl HostBind {
    /// Its name under the container's `mounts/` directory of the share.
    pub fn entry_name(&self) -> String {
        self.index.to_string()
    }
}

/// Where container `id` finds its root file system in the guest.
pub fn guest_rootfs(id: &str) -> PathBuf {
    Path::new(GUEST_SHARE_DIR).join(id).join("rootfs")
}

/// Where container `id` finds the source of its spec mount `bind` in the guest.
pub fn guest_source(id: &str, bind: &HostBind) -> PathBuf {
    Path::new(GUEST_SHARE_DIR)
        .join(id)
        .join("mounts")
        .join(bind.entry_name())
}

fn has_option(mount: &Mount, wanted: &[&str]) -> bool {
    mount
        .options()
        .as_ref()
        .is_some_and(|options| options.iter().any(|o| wanted.contains(&o.as_str())))
}

/// Whether the runtime reads `mount`'s source as a host path.
pub fn is_bind(mount: &Mount) -> bool {
    mount.typ().as_deref() == Some("bind") || has_option(mount, &["bind", "rbind"])
}

/// The host binds of `spec`, and `spec` rewritten so that each bind's source is its guest path
/// in container `id`'s part of the share.
pub fn plan(spec: &Spec, id: &str, bundle: &Path) -> (Spec, Vec<HostBind>) {
    let mut spec = spec.clone();
    let mut binds = Vec::new();
    if let Some(mounts) = spec.mounts().clone() {
        let rewritten = mounts
            .into_iter()
            .enumerate()
            .map(|(index, mut mount)| {
                let Some(source) = mount.source().clone().filter(|_| is_bind(&mount)) else {
                    return mount;
                };
                let bind = HostBind {
                    index,
                    destination: mount.destination().clone(),
                    source: if source.is_absolute() {
                        source
                    } else {
                        bundle.join(source)
                    },
                    // The last of `ro`/`rw` wins, as in mount(8).
                    read_only: mount
                        .options()
                        .as_ref()
                        .and_then(|o| o.iter().rev().find(|o| *o == "ro" || *o == "rw"))
                        .is_some_and(|o| o == "ro"),
                    recursive: has_option(&mount, &["rbind"]),
                };
                mount.set_source(Some(guest_source(id, &bind)));
                binds.push(bind);
                mount
            })
            .collect();
        spec.set_mounts(Some(rewritten));
    }
    (spec, binds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{MountBuilder, SpecBuilder};

    fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
        MountBuilder::default()
            .destination(destination)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap()
    }

    #[test]
    fn binds_are_rewritten_into_the_share_and_the_rest_is_kept() {
        let spec = SpecBuilder::default()
            .mounts(vec![
                mount("/proc", "proc", "proc", &[]),
                mount("/etc/hosts", "bind", "/var/lib/x/hosts", &["rbind", "ro"]),
                mount("/data", "none", "/srv/data", &["bind", "rw"]),
                mount("/dev/shm", "tmpfs", "shm", &["nosuid"]),
                mount("/cfg", "bind", "conf", &["bind", "ro", "rw"]),
            ])
            .build()
            .unwrap();
        let (rewritten, binds) = plan(&spec, "c1", Path::new("/bundle"));
        let sources: Vec<_> = rewritten
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.source().clone().unwrap())
            .collect();
        assert_eq!(
            sources,
            [
                PathBuf::from("proc"),
                PathBuf::from("/run/rust-vm/share/c1/mounts/1"),
                PathBuf::from("/run/rust-vm/share/c1/mounts/2"),
                PathBuf::from("shm"),
                PathBuf::from("/run/rust-vm/share/c1/mounts/4"),
            ]
        );
        assert_eq!(binds.len(), 3);
        assert_eq!(binds[0].source, Path::new("/var/lib/x/hosts"));
        assert!(binds[0].read_only && binds[0].recursive);
        assert!(!binds[1].read_only && !binds[1].recursive);
        assert_eq!(
            binds[2].source,
            Path::new("/bundle/conf"),
            "relative to the bundle"
        );
        assert!(!binds[2].read_only, "the last of ro/rw wins");
        // The options go to the agent unchanged: it applies ro in the guest too.
        let options = rewritten.mounts().as_ref().unwrap()[1].options().clone();
        assert_eq!(options.unwrap(), ["rbind", "ro"]);
        assert_eq!(
            guest_rootfs("c1"),
            Path::new("/run/rust-vm/share/c1/rootfs")
        );
    }

    #[test]
    fn a_spec_without_mounts_has_no_binds() {
        let spec = SpecBuilder::default().build().unwrap();
        let mut bare = spec.clone();
        bare.set_mounts(None);
        let (rewritten, binds) = plan(&bare, "c", Path::new("/b"));
        assert!(binds.is_empty());
        assert!(rewritten.mounts().is_none());
    }
}
