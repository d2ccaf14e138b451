//! How the agent runs containers: where cgroups and per-container state live.

use std::path::PathBuf;

/// Default parent of every container cgroup (cgroup v2).
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup/rust-vm";
/// Default directory for per-container state (block-device rootfs mount points).
pub const DEFAULT_STATE_DIR: &str = "/run/rust-vm/containers";

/// Whether containers get a cgroup.
///
/// * `V2 { root }`: one cgroup v2 directory per container under `root` (the "rust-vm parent");
///   `root` and its parent must be on a cgroup2 mount. Resources, stats, OOM counts and
///   `destroy`'s kill-all come from there. This is the guest's mode.
/// * `Disabled`: no cgroup is created. Meant for host-mode tests on hosts without a usable
///   cgroup v2 hierarchy (such as this project's v1 CI host). A spec that asks for resource
///   limits is refused (naming `linux.resources.*`) instead of running unlimited; `stats`,
///   `update` and `oom_kills` return `CgroupsDisabled`; processes are found through their
///   pid namespace instead of `cgroup.procs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupConfig {
    V2 { root: PathBuf },
    Disabled,
}

impl CgroupConfig {
    /// `V2` at [`DEFAULT_CGROUP_ROOT`] when `/sys/fs/cgroup` is a cgroup2 mount, else `Disabled`.
    pub fn detect() -> Self {
        match nix::sys::statfs::statfs("/sys/fs/cgroup") {
            Ok(fs) if fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => {
                CgroupConfig::V2 {
                    root: PathBuf::from(DEFAULT_CGROUP_ROOT),
                }
            }
            _ => CgroupConfig::Disabled,
        }
    }
}

/// Settings chosen by the agent (not by the spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub cgroups: CgroupConfig,
    /// Per-container state: `<state_dir>/<id>/rootfs` is where a block-device rootfs is mounted.
    pub state_dir: PathBuf,
}

impl Default for RuntimeConfig {
    /// cgroups as [`CgroupConfig::detect`] finds them, state under [`DEFAULT_STATE_DIR`].
    fn default() -> Self {
        RuntimeConfig {
            cgroups: CgroupConfig::detect(),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        }
    }
}
