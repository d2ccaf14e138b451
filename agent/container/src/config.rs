//! How the agent runs containers: where cgroups and per-container state live.

use std::path::PathBuf;
use std::time::Duration;

/// Default parent of every container cgroup (cgroup v2).
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup/rust-vm";
/// Default directory for per-container state (block-device rootfs mount points).
pub const DEFAULT_STATE_DIR: &str = "/run/rust-vm/containers";
/// Default bound on each setup step of a container's or exec's child, sized for the slowest
/// host we run on: where guest ring 0 is instruction-emulated (the project's AMD machines) one
/// exec step in a pod's second container once took over 30 s. The host passes its own agent
/// timeout instead, so the guest never gives up on a step the host still waits for.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(120);

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
    /// How long the agent waits for each setup step of a child (the container's init or an
    /// exec) before it kills the child and fails the request.
    pub step_timeout: Duration,
}

impl Default for RuntimeConfig {
    /// cgroups as [`CgroupConfig::detect`] finds them, state under [`DEFAULT_STATE_DIR`], steps
    /// bounded by [`DEFAULT_STEP_TIMEOUT`].
    fn default() -> Self {
        RuntimeConfig {
            cgroups: CgroupConfig::detect(),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            step_timeout: DEFAULT_STEP_TIMEOUT,
        }
    }
}
