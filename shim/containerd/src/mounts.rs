//! The container's root filesystem from containerd's mounts (an overlay from the default
//! snapshotter), mounted at `<bundle>/rootfs`, and its removal.

use std::fs;
use std::path::{Path, PathBuf};

use containerd_shim::protos::types::mount::Mount;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MountError {
    #[error("create {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount {kind} {source_path} at {target}: {reason}")]
    Mount {
        kind: String,
        source_path: String,
        target: PathBuf,
        reason: String,
    },
    #[error("rootfs mount {index} has an empty type")]
    EmptyType { index: usize },
    #[error("read /proc/self/mountinfo")]
    MountInfo(#[source] std::io::Error),
    #[error("unmount {path}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// Mounts containerd's rootfs mounts at `target`, in order. With no mounts, the bundle already
/// holds the root filesystem (`ctr run --rootfs`) and nothing is mounted.
pub fn mount_rootfs(mounts: &[Mount], target: &Path) -> Result<(), MountError> {
    if mounts.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(target).map_err(|source| MountError::CreateDir {
        path: target.to_owned(),
        source,
    })?;
    for (index, m) in mounts.iter().enumerate() {
        if m.type_.is_empty() {
            undo(target);
            return Err(MountError::EmptyType { index });
        }
        let at = if m.target.is_empty() {
            target.to_owned()
        } else {
            target.join(m.target.trim_start_matches('/'))
        };
        if let Err(reason) = mount_one(&m.type_, &m.source, &m.options, &at) {
            undo(target);
            return Err(MountError::Mount {
                kind: m.type_.clone(),
                source_path: m.source.clone(),
                target: at,
                reason,
            });
        }
    }
    Ok(())
}

/// The kernel copies at most one page of mount data.
const MAX_MOUNT_DATA: usize = 4096;

fn mount_one(kind: &str, source: &str, options: &[String], target: &Path) -> Result<(), String> {
    let options = mount_options::parse_options(options)?;
    let (flags, data) = (options.flags, options.data.join(","));
    if data.len() >= MAX_MOUNT_DATA {
        if kind == "overlay" {
            return mount_overlay_relative(source, flags, &data, target);
        }
        return Err(format!(
            "mount options are {} bytes, over one page",
            data.len()
        ));
    }
    let data = (!data.is_empty()).then_some(data.as_str());
    // A bind mount ignores flags other than MS_BIND|MS_REC: read-only takes a remount.
    mount(Some(source), target, Some(kind), flags, data).map_err(|e| e.to_string())?;
    if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            flags | MsFlags::MS_REMOUNT,
            None::<&str>,
        )
        .map_err(|e| format!("remount read-only: {e}"))?;
    }
    if !options.propagation.is_empty() {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            options.propagation,
            None::<&str>,
        )
        .map_err(|e| format!("setting propagation: {e}"))?;
    }
    Ok(())
}

/// An overlay of many layers has more than a page of options. The layer paths share a long
/// prefix (the snapshotter's directory): a child process changes into it and mounts with
/// relative paths, which the kernel resolves against its working directory.
fn mount_overlay_relative(
    source: &str,
    flags: MsFlags,
    data: &str,
    target: &Path,
) -> Result<(), String> {
    let dirs: Vec<&str> = data
        .split(',')
        .filter_map(|o| o.split_once('=').map(|(_, v)| v))
        .flat_map(|v| v.split(':'))
        .filter(|v| v.starts_with('/'))
        .collect();
    let prefix = common_dir(&dirs).ok_or("overlay layers share no directory")?;
    let relative: Vec<String> = data
        .split(',')
        .map(|option| match option.split_once('=') {
            Some((key, value)) => {
                let value: Vec<&str> = value
                    .split(':')
                    .map(|v| v.strip_prefix(prefix.as_str()).unwrap_or(v))
                    .collect();
                format!("{key}={}", value.join(":"))
            }
            None => option.to_owned(),
        })
        .collect();
    let relative = relative.join(",");
    if relative.len() >= MAX_MOUNT_DATA {
        return Err(format!(
            "overlay options are {} bytes even relative to {prefix}",
            relative.len()
        ));
    }
    let target = fs::canonicalize(target).map_err(|e| e.to_string())?;
    let to_c = |s: &str| std::ffi::CString::new(s).map_err(|e| e.to_string());
    let (c_dir, c_source, c_target, c_kind, c_data) = (
        to_c(&prefix)?,
        to_c(source)?,
        to_c(&target.to_string_lossy())?,
        to_c("overlay")?,
        to_c(&relative)?,
    );
    // SAFETY: the child only makes raw system calls on data prepared before the fork.
    match unsafe { nix::unistd::fork() }.map_err(|e| e.to_string())? {
        nix::unistd::ForkResult::Child => unsafe {
            if libc::chdir(c_dir.as_ptr()) != 0 {
                libc::_exit(1);
            }
            let rc = libc::mount(
                c_source.as_ptr(),
                c_target.as_ptr(),
                c_kind.as_ptr(),
                flags.bits(),
                c_data.as_ptr().cast(),
            );
            libc::_exit(if rc == 0 { 0 } else { 2 });
        },
        nix::unistd::ForkResult::Parent { child } => {
            match nix::sys::wait::waitpid(child, None).map_err(|e| e.to_string())? {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                nix::sys::wait::WaitStatus::Exited(_, 1) => Err(format!("chdir {prefix} failed")),
                other => Err(format!(
                    "overlay mount with relative layers failed: {other:?}"
                )),
            }
        }
    }
}

/// The longest directory (ending in `/`) that every path starts with.
fn common_dir(paths: &[&str]) -> Option<String> {
    let first = paths.first()?;
    let mut len = first.len();
    for path in &paths[1..] {
        len = first
            .bytes()
            .zip(path.bytes())
            .take(len)
            .take_while(|(a, b)| a == b)
            .count();
    }
    let dir = &first[..len];
    let end = dir.rfind('/')?;
    (end > 0).then(|| first[..=end].to_owned())
}

fn undo(target: &Path) {
    if let Err(err) = unmount_rootfs(target) {
        log::warn!(
            "undo rootfs mounts at {}: {}",
            target.display(),
            rust_vm_sandbox::Chain(&err)
        );
    }
}

/// Unmounts everything mounted at or below `target`, deepest first. Not mounted is fine.
pub fn unmount_rootfs(target: &Path) -> Result<(), MountError> {
    let target = match fs::canonicalize(target) {
        Ok(path) => path,
        Err(_) => return Ok(()),
    };
    loop {
        let info = fs::read_to_string("/proc/self/mountinfo").map_err(MountError::MountInfo)?;
        let mut points: Vec<PathBuf> = mount_points(&info)
            .into_iter()
            .filter(|p| p.starts_with(&target))
            .collect();
        if points.is_empty() {
            return Ok(());
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for point in points {
            match umount2(&point, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(source) => {
                    return Err(MountError::Unmount {
                        path: point,
                        source,
                    })
                }
            }
        }
    }
}

/// Mount points listed in a mountinfo text (field 5), with `\NNN` octal escapes decoded.
fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .collect()
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(digits) = bytes.get(i + 1..i + 4) {
                if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                    let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                    if let Ok(value) = u8::try_from(value) {
                        out.push(value);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
95 22 0:50 / /run/ctd/bundle/rootfs rw,relatime - overlay overlay rw,lowerdir=/a,upperdir=/b,workdir=/c
96 95 0:51 / /run/ctd/bundle/rootfs/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn mount_points_are_decoded() {
        let points = mount_points(MOUNTINFO);
        assert_eq!(
            points,
            vec![
                PathBuf::from("/"),
                PathBuf::from("/run/ctd/bundle/rootfs"),
                PathBuf::from("/run/ctd/bundle/rootfs/with space"),
            ]
        );
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let options: Vec<String> = ["ro", "nosuid", "index=off", "lowerdir=/a:/b", "rbind"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let parsed = mount_options::parse_options(&options).expect("valid");
        let flags = parsed.flags;
        assert!(flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_BIND));
        assert!(flags.contains(MsFlags::MS_REC));
        assert_eq!(parsed.data, vec!["index=off", "lowerdir=/a:/b"]);
        // The agent's table: remount means nothing for a new mount.
        let remount = ["remount".to_string()];
        assert!(mount_options::parse_options(&remount).is_err());
    }

    #[test]
    fn common_directory_of_layers() {
        let dirs = [
            "/var/lib/ctd/snapshots/12/fs",
            "/var/lib/ctd/snapshots/3/fs",
            "/var/lib/ctd/snapshots/14/work",
        ];
        assert_eq!(
            common_dir(&dirs).as_deref(),
            Some("/var/lib/ctd/snapshots/")
        );
        assert_eq!(common_dir(&["/a/x", "/b/y"]), None);
    }

    #[test]
    fn unescape_leaves_plain_text() {
        assert_eq!(unescape("/a/b"), "/a/b");
        assert_eq!(unescape("/a\\011b"), "/a\tb");
        assert_eq!(unescape("/a\\"), "/a\\");
        assert_eq!(unescape("/a\\9x"), "/a\\9x");
    }

    #[test]
    fn unmounting_an_unmounted_directory_is_fine() {
        let dir = std::env::temp_dir().join(format!("rvm-mounts-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        unmount_rootfs(&dir).unwrap();
        unmount_rootfs(&dir.join("missing")).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_mount_type_is_refused() {
        let dir = std::env::temp_dir().join(format!("rvm-mounts-e-{}", std::process::id()));
        let m = Mount {
            source: "overlay".into(),
            ..Default::default()
        };
        let err = mount_rootfs(&[m], &dir).unwrap_err();
        assert!(err.to_string().contains("empty type"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
