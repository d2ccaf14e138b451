//! A host cgroup per sandbox: the VMM and virtiofsd (the `namespaces` back-end's agent and its
//! containers) run in `rust-vm/<id>` under the memory, CPU and pids controllers, bounded by the
//! VM's size plus an overhead, so a guest cannot make its sandbox's host processes take more.
//! Works on a cgroup v2 host and on a v1 (or hybrid) one, where the three controllers each have
//! their own hierarchy. The processes join before they exec (`cgroup.procs`, written from the
//! child), so nothing they allocate is charged elsewhere.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the cgroup file systems are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The directory of every sandbox's cgroup, under each hierarchy.
pub const PARENT: &str = "rust-vm";
/// Host memory a sandbox may use beyond its guest RAM: the VMM and virtiofsd themselves (about
/// 25–30 MiB resident, docs/performance.md), their page cache and the host's file reads.
pub const MEMORY_OVERHEAD_MIB: u64 = 192;
/// Tasks a sandbox may have: the VMM's threads, virtiofsd's pool; with the `namespaces`
/// back-end the containers' processes too.
pub const PIDS_MAX: u64 = 4096;
const CPU_PERIOD_US: u64 = 100_000;
/// What bounds a sandbox, in the order of [`HostCgroup`]'s v1 directories.
const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

#[derive(Debug, thiserror::Error)]
pub enum HostCgroupError {
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("no {controller} controller under {}: rust-vm bounds each sandbox with memory, cpu and pids", root.display())]
    MissingController {
        controller: &'static str,
        root: PathBuf,
    },
}

/// What a sandbox may take on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    /// CPU time per [`CPU_PERIOD_US`]: one CPU per vCPU, and one for the devices and virtiofsd.
    pub cpu_quota_us: u64,
    pub pids: u64,
}

impl Limits {
    /// For a VM of `vcpus` and `mem_mib` of RAM.
    pub fn for_vm(vcpus: u32, mem_mib: u64) -> Limits {
        Limits {
            memory_bytes: mem_mib.saturating_add(MEMORY_OVERHEAD_MIB) << 20,
            cpu_quota_us: (u64::from(vcpus) + 1) * CPU_PERIOD_US,
            pids: PIDS_MAX,
        }
    }
}

/// The cgroup's name for sandbox `id` with state in `state_dir`: the id, and a hash of the
/// directory so that equal ids of different owners (containerd namespaces, `--root`s) differ.
pub fn name(id: &str, state_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same directory gives the same name in every process.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    state_dir.hash(&mut hasher);
    format!("{id}-{:08x}", hasher.finish() as u32)
}

/// The sandbox's cgroup: one directory (v2) or one per controller (v1).
#[derive(Debug)]
pub struct HostCgroup {
    dirs: Vec<PathBuf>,
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> HostCgroupError + 'a {
    move |source| HostCgroupError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn write(path: &Path, value: &str) -> Result<(), HostCgroupError> {
    fs::write(path, value).map_err(io_err("writing", path))
}

fn make_dir(path: &Path) -> Result<(), HostCgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("creating", path)(e)),
    }
}

/// The controllers a sandbox's cgroup needs that `root` does not offer (v2: not in
/// `cgroup.controllers`; v1: no hierarchy of their own).
pub fn missing_controllers(root: &Path) -> Result<Vec<&'static str>, HostCgroupError> {
    let unified = if is_unified(root) {
        let file = root.join("cgroup.controllers");
        Some(fs::read_to_string(&file).map_err(io_err("reading", &file))?)
    } else {
        None
    };
    Ok(CONTROLLERS
        .into_iter()
        .filter(|c| match &unified {
            Some(list) => !list.split_whitespace().any(|l| l == *c),
            None => !root.join(c).join("cgroup.procs").is_file(),
        })
        .collect())
}

/// Whether `root` is a cgroup v2 (unified) mount.
pub fn is_unified(root: &Path) -> bool {
    root.join("cgroup.controllers").is_file()
}

/// Where sandbox `id`'s cgroup is under each hierarchy of `root` (whether or not it exists).
fn dirs_of(root: &Path, id: &str) -> Vec<PathBuf> {
    if is_unified(root) {
        vec![root.join(PARENT).join(id)]
    } else {
        CONTROLLERS
            .iter()
            .map(|c| root.join(c).join(PARENT).join(id))
            .collect()
    }
}

impl HostCgroup {
    /// Creates (or takes over, after a killed owner) sandbox `id`'s cgroup under `root` and
    /// sets `limits`.
    pub fn create(root: &Path, id: &str, limits: Limits) -> Result<HostCgroup, HostCgroupError> {
        if let Some(&controller) = missing_controllers(root)?.first() {
            return Err(HostCgroupError::MissingController {
                controller,
                root: root.to_path_buf(),
            });
        }
        let dirs = dirs_of(root, id);
        if is_unified(root) {
            let parent = root.join(PARENT);
            make_dir(&parent)?;
            // Controllers reach a child only when each level above enables them.
            for level in [root, parent.as_path()] {
                write(&level.join("cgroup.subtree_control"), "+memory +cpu +pids")?;
            }
            let dir = &dirs[0];
            make_dir(dir)?;
            write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
            write(
                &dir.join("cpu.max"),
                &format!("{} {CPU_PERIOD_US}", limits.cpu_quota_us),
            )?;
            write(&dir.join("pids.max"), &limits.pids.to_string())?;
        } else {
            for (controller, dir) in CONTROLLERS.into_iter().zip(&dirs) {
                make_dir(&root.join(controller).join(PARENT))?;
                make_dir(dir)?;
            }
            write(
                &dirs[0].join("memory.limit_in_bytes"),
                &limits.memory_bytes.to_string(),
            )?;
            write(
                &dirs[1].join("cpu.cfs_period_us"),
                &CPU_PERIOD_US.to_string(),
            )?;
            write(
                &dirs[1].join("cpu.cfs_quota_us"),
                &limits.cpu_quota_us.to_string(),
            )?;
            write(&dirs[2].join("pids.max"), &limits.pids.to_string())?;
        }
        Ok(HostCgroup { dirs })
    }

    /// The directories (one per hierarchy).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The `cgroup.procs` files a process writes itself into (see
    /// [`crate::sandbox::process::join_cgroup`]), ready for use between fork and exec.
    pub fn procs_files(&self) -> Vec<CString> {
        self.dirs
            .iter()
            .filter_map(|d| CString::new(d.join("cgroup.procs").as_os_str().as_bytes()).ok())
            .collect()
    }

    /// Removes the cgroup once its processes are gone (a dying process leaves it a moment
    /// after its parent reaped it).
    pub fn remove(&self) -> Result<(), HostCgroupError> {
        remove_dirs(&self.dirs)
    }
}

/// Removes what is left of sandbox `id`'s cgroup under `root` (after a killed owner).
pub fn clean_up(root: &Path, id: &str) -> Result<(), HostCgroupError> {
    let dirs: Vec<PathBuf> = dirs_of(root, id)
        .into_iter()
        .filter(|d| d.exists())
        .collect();
    remove_dirs(&dirs)
}

fn remove_dirs(dirs: &[PathBuf]) -> Result<(), HostCgroupError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    for dir in dirs {
        loop {
            match fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(io_err("removing", dir)(e)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn limits_follow_the_vms_size() {
        let l = Limits::for_vm(2, 512);
        assert_eq!(l.memory_bytes, (512 + MEMORY_OVERHEAD_MIB) << 20);
        assert_eq!(l.cpu_quota_us, 300_000);
        assert_eq!(l.pids, PIDS_MAX);
    }

    #[test]
    fn v1_hierarchies_each_get_their_limit() {
        let root = tempfile::tempdir().expect("tempdir");
        for c in ["memory", "cpu", "pids"] {
            fs::create_dir(root.path().join(c)).expect("mkdir");
            fs::write(root.path().join(c).join("cgroup.procs"), "").expect("procs");
        }
        let cg = HostCgroup::create(root.path(), "sb", Limits::for_vm(1, 256)).expect("create");
        let at = |c: &str, f: &str| read(&root.path().join(c).join("rust-vm/sb").join(f));
        assert_eq!(
            at("memory", "memory.limit_in_bytes"),
            (448u64 << 20).to_string()
        );
        assert_eq!(at("cpu", "cpu.cfs_quota_us"), "200000");
        assert_eq!(at("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(at("pids", "pids.max"), PIDS_MAX.to_string());
        assert_eq!(cg.procs_files().len(), 3);
    }

    #[test]
    fn v2_enables_the_controllers_on_the_way_down() {
        let root = tempfile::tempdir().expect("tempdir");
        fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .expect("controllers");
        let cg = HostCgroup::create(root.path(), "sb", Limits::for_vm(1, 256)).expect("create");
        let dir = root.path().join("rust-vm/sb");
        assert_eq!(cg.dirs(), std::slice::from_ref(&dir));
        assert_eq!(read(&dir.join("memory.max")), (448u64 << 20).to_string());
        assert_eq!(read(&dir.join("cpu.max")), "200000 100000");
        assert_eq!(read(&dir.join("pids.max")), PIDS_MAX.to_string());
        for level in [root.path().to_path_buf(), root.path().join("rust-vm")] {
            assert_eq!(
                read(&level.join("cgroup.subtree_control")),
                "+memory +cpu +pids"
            );
        }
    }

    #[test]
    fn a_missing_controller_is_named() {
        let root = tempfile::tempdir().expect("tempdir");
        fs::write(root.path().join("cgroup.controllers"), "cpu memory\n").expect("controllers");
        let err = HostCgroup::create(root.path(), "sb", Limits::for_vm(1, 256)).unwrap_err();
        assert!(err.to_string().starts_with("no pids controller"), "{err}");
    }
}
