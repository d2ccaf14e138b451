//! Containers from OCI runtime specs, in the style of youki's libcontainer: one file per verb,
//! every syscall behind the `Syscalls` trait so spec translation is testable without root.
//!
//! CONTRACT between this module and the agent server (src/server, src/main.rs):
//!
//! ```ignore
//! pub enum RootfsSource { Directory(PathBuf), BlockDevice { device: PathBuf, fstype: String, readonly: bool } }
//! pub enum StdioSpec {
//!     /// The child's ends; the server keeps the other ends and streams them.
//!     Pipes { stdin: Option<OwnedFd>, stdout: OwnedFd, stderr: OwnedFd },
//!     /// Allocate a pty; the master comes back in `ProcessHandle::pty_master`.
//!     Terminal { rows: u16, cols: u16 },
//! }
//! pub struct CreateRequest { pub id: String, pub spec: oci_spec::runtime::Spec, pub rootfs: RootfsSource, pub stdio: StdioSpec }
//! pub struct ProcessHandle { pub pid: i32, pub pty_master: Option<OwnedFd> }
//!
//! impl Container {
//!     /// Validates the spec (errors name the field), sets up cgroup, namespaces, mounts and
//!     /// pivot_root, and leaves the init process blocked before exec until `start`.
//!     pub fn create(req: CreateRequest, sys: Arc<dyn Syscalls>) -> Result<(Container, ProcessHandle), ContainerError>;
//!     pub fn start(&mut self) -> Result<(), ContainerError>;
//!     pub fn exec(&mut self, process: &oci_spec::runtime::Process, stdio: StdioSpec) -> Result<ProcessHandle, ContainerError>;
//!     pub fn signal(&self, pid: i32, signal: i32) -> Result<(), ContainerError>;
//!     pub fn pids(&self) -> Result<Vec<i32>, ContainerError>;
//!     pub fn stats(&self) -> Result<Stats, ContainerError>;
//!     pub fn update(&mut self, resources: &oci_spec::runtime::LinuxResources) -> Result<(), ContainerError>;
//!     pub fn oom_kills(&self) -> Result<u64, ContainerError>;
//!     /// Kills what is left, unmounts, removes the cgroup: nothing stays behind.
//!     pub fn destroy(self) -> Result<(), ContainerError>;
//! }
//! ```
//!
//! Reaping: the agent is PID 1 in the guest (a child subreaper in host mode) and one global
//! reaper calls `waitpid(-1)`. Every pid this module returns is a direct child of the agent
//! (use CLONE_PARENT for a process created from an intermediate) and is reaped there; this module
//! never waits on pids itself and learns about intermediate steps through pipes, not waitpid.
//!
//! How processes are made: `create`/`exec` fork an intermediate (also a child of the agent,
//! so the reaper sees its exit too: pids it does not know are to be reaped and ignored). The
//! intermediate joins/unshares namespaces, gets its id maps written by the agent, and clones
//! the container process with CLONE_PARENT. The init then builds the rootfs, applies the
//! process spec and blocks on a SOCK_SEQPACKET channel until `start`. Forked processes close
//! every agent fd except their own stdio and channel, reset signal mask and dispositions,
//! and only `_exit`. `start` returns once exec happened (channel closed by O_CLOEXEC).
//!
//! Defaults and refusals worth knowing: a new mount namespace is required; without a `/dev`
//! mount in the spec a tmpfs is put there; with cgroups disabled any resource limit is
//! refused (naming `linux.resources.*`); `linux.resources.devices` is not enforced (logged);
//! seccomp is loaded right before exec with `noNewPrivileges`, else before the user switch;
//! `hooks`, `intelRdt`, `personality`, time namespaces, id-mapped mounts and seccomp notify
//! are refused. If `pivot_root` refuses (an initramfs root), the rootfs is moved over `/`
//! and chrooted into, which is weaker: PID-1 mode should switch root off the initramfs.
//!
//! Beyond the contract: `Container::create_with_config` takes a [`RuntimeConfig`] (cgroup v2
//! root, or no cgroups for host-mode tests on a cgroup v1 host; see [`CgroupConfig`]) and
//! [`parse_spec_json`] turns spec JSON into a `Spec` with errors that name the field.
//!
//! Layout: one file per verb (`create`, `start`, `exec`, `signal`, `stats`, `update`,
//! `destroy`); `init` is the code of the forked processes; `rootfs`, `process`, `cgroup`,
//! `seccomp`, `namespaces` translate the spec; `syscalls` is the trait and its impls.

// The agent binary is this module's only user and calls a subset of it as it grows; the
// whole API is exercised by the tests below.
#![allow(dead_code)]

mod cgroup;
mod channel;
mod config;
mod create;
mod destroy;
mod error;
mod exec;
mod init;
mod mounts;
mod namespaces;
mod process;
mod rootfs;
mod seccomp;
mod signal;
mod spec;
mod start;
mod stats;
mod syscalls;
mod update;

#[cfg(test)]
mod tests;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use oci_spec::runtime::LinuxNamespaceType;

#[allow(unused_imports)]
pub use cgroup::CgroupStats as Stats;
#[allow(unused_imports)]
pub use config::{CgroupConfig, RuntimeConfig, DEFAULT_CGROUP_ROOT, DEFAULT_STATE_DIR};
#[allow(unused_imports)]
pub use error::{ContainerError, SpecError};
#[allow(unused_imports)]
pub use spec::parse_spec_json;
#[allow(unused_imports)]
pub use syscalls::{LinuxSyscalls, Syscalls};

/// Where the container's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsSource {
    /// An existing directory (absolute path). Mounts happen in the container's own mount
    /// namespace only.
    Directory(PathBuf),
    /// A block device the agent mounts at `<state_dir>/<id>/rootfs` first (and unmounts on
    /// destroy).
    BlockDevice {
        device: PathBuf,
        fstype: String,
        readonly: bool,
    },
}

#[derive(Debug)]
pub enum StdioSpec {
    /// The child's ends; the server keeps the other ends and streams them. No stdin means
    /// /dev/null.
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// Allocate a pty; the master comes back in `ProcessHandle::pty_master`.
    Terminal { rows: u16, cols: u16 },
}

#[derive(Debug)]
pub struct CreateRequest {
    pub id: String,
    pub spec: oci_spec::runtime::Spec,
    pub rootfs: RootfsSource,
    pub stdio: StdioSpec,
}

#[derive(Debug)]
pub struct ProcessHandle {
    /// In the agent's pid namespace; a direct child of the agent.
    pub pid: i32,
    pub pty_master: Option<OwnedFd>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Init blocked before exec.
    Created,
    Running,
    /// Start failed; only destroy is left.
    Stopped,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        }
    }
}

/// A created container. Dropping it without `destroy` leaves its processes and cgroup
/// behind (the init waiting for `start` exits by itself); call `destroy`.
#[derive(Debug)]
pub struct Container {
    id: String,
    spec: oci_spec::runtime::Spec,
    sys: Arc<dyn Syscalls>,
    status: Status,
    init_pid: i32,
    /// Names the init even after it was reaped (pids get reused).
    init_pidfd: OwnedFd,
    /// The setup channel; `start` sends on it.
    start_chan: Option<channel::Channel>,
    cgroup: Option<cgroup::Cgroup>,
    block_mount: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    namespaces: Vec<LinuxNamespaceType>,
    exec_pids: Vec<i32>,
    /// `destroy` (or drop) ran.
    torn_down: bool,
}

impl Container {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// "created" (init waiting for `start`), "running" or "stopped" (start failed).
    pub fn status(&self) -> &'static str {
        self.status.name()
    }

    pub fn init_pid(&self) -> i32 {
        self.init_pid
    }

    pub fn spec(&self) -> &oci_spec::runtime::Spec {
        &self.spec
    }

    /// Whether the init has not exited yet.
    pub fn init_alive(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.init_pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no timeout.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        rc == 0
    }

    /// Waits up to `timeout` for the init to exit (not to be reaped).
    pub(crate) fn wait_init_exit(&self, timeout: std::time::Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.init_pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        loop {
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
            {
                return rc > 0;
            }
        }
    }

    /// The container's cgroup directory, when cgroups are enabled.
    pub fn cgroup_path(&self) -> Option<&std::path::Path> {
        self.cgroup.as_ref().map(|c| c.path())
    }
}
