//! Linux containers from OCI runtime specs, in the style of youki's libcontainer: rust-vm's
//! agent uses it to run a pod's containers inside the microVM (and on the host in its test
//! mode).
//!
//! [`Container::create`] (or [`Container::create_with_config`], which takes a
//! [`RuntimeConfig`]) validates a [`CreateRequest`] (errors name the spec field, see
//! [`SpecError`]), sets up the cgroup, namespaces, mounts and `pivot_root`, and leaves the init
//! process blocked before `execve` until [`Container::start`]. [`Container::exec`] runs another
//! process in it, [`Container::signal`], [`Container::pids`], [`Container::stats`],
//! [`Container::update`] and [`Container::oom_kills`] act on it, and [`Container::destroy`]
//! kills what is left, unmounts and removes the cgroup: nothing stays behind.
//! [`parse_spec_json`] turns spec JSON into a `Spec` with errors that name the field.
//!
//! Every syscall goes through the [`Syscalls`] trait ([`LinuxSyscalls`] is the real one), so
//! the translation of a spec into syscalls is unit-tested without root against a recording
//! double.
//!
//! # Reaping
//!
//! The caller is PID 1 (the agent in the guest) or a child subreaper (the agent in host mode),
//! and one global reaper of the caller's calls `waitpid(-1)`. Every pid this library returns
//! is a direct child of the caller (a process created from an intermediate is cloned with
//! `CLONE_PARENT`) and is reaped there; the library never waits on pids itself and learns
//! about intermediate steps through pipes, not `waitpid`. Intermediates are children of the
//! caller too, so its reaper also sees them exit: pids it does not know are to be reaped and
//! ignored.
//!
//! # How processes are made
//!
//! `create` and `exec` fork an intermediate, which joins or unshares namespaces, gets its id
//! maps written by the caller, and clones the container process with `CLONE_PARENT`. The init
//! then builds the rootfs, applies the process spec and blocks on a `SOCK_SEQPACKET` channel
//! until `start`. Forked processes close every inherited fd except their own stdio and
//! channel, reset the signal mask and dispositions, and only `_exit`. `start` returns once
//! `execve` happened (the channel is closed by `O_CLOEXEC`).
//!
//! # Defaults and refusals
//!
//! * A new mount namespace is required.
//! * Without a `/dev` mount in the spec a tmpfs is put there.
//! * With cgroups disabled ([`CgroupConfig::Disabled`]) any resource limit is refused (naming
//!   `linux.resources.*`); `linux.resources.devices` is then not enforced (logged). With cgroups
//!   it is a device program on the container's cgroup (`devices`), cgroup v1's semantics.
//! * A `cgroup`/`cgroup2` mount is always cgroup v2. A container with a cgroup of its own and no
//!   cgroup namespace gets that cgroup bound there (as runc does), so it reads its own limits at
//!   `/sys/fs/cgroup`; otherwise it is a fresh cgroup2 mount.
//! * Each setup step of a forked child is bounded by [`RuntimeConfig::step_timeout`]: past it
//!   the child is killed and the request fails.
//! * seccomp is loaded right before `execve` with `noNewPrivileges`, else before the user
//!   switch.
//! * `hooks`, `intelRdt`, `personality`, time namespaces, id-mapped mounts and seccomp notify
//!   are refused.
//! * The container's root is always entered with `pivot_root` and the old root detached; there
//!   is no chroot fallback. A caller whose root is an initramfs (the kernel's rootfs, which
//!   `pivot_root` cannot leave) must first move its root onto a mount of its own, as the guest
//!   agent does at boot.
//!
//! # Layout
//!
//! One file per verb (`create`, `start`, `exec`, `signal`, `stats`, `update`, `destroy`);
//! `init` is the code of the forked processes and `step` their error; `rootfs`, `mounts`,
//! `process`, `cgroup`, `seccomp`, `namespaces` translate the spec; `channel` is the setup
//! channel; `syscalls` is the trait and its implementations.

mod cgroup;
mod channel;
mod config;
mod create;
mod destroy;
mod devices;
mod error;
mod exec;
#[cfg(feature = "fuzzing")]
pub mod fuzz_api;
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
mod step;
mod syscalls;
mod update;

#[cfg(test)]
mod tests;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use oci_spec::runtime::LinuxNamespaceType;

pub use cgroup::CgroupStats as Stats;
pub use config::{
    CgroupConfig, RuntimeConfig, DEFAULT_CGROUP_ROOT, DEFAULT_STATE_DIR, DEFAULT_STEP_TIMEOUT,
};
pub use error::{ContainerError, SpecError};
pub use spec::parse_spec_json;
pub use syscalls::{FileKind, LinuxSyscalls, MountPoint, MountPointKind, Syscalls};

/// Where the container's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsSource {
    /// An existing directory (absolute path). Mounts happen in the container's own mount
    /// namespace only.
    Directory(PathBuf),
    /// A block device mounted at `<state_dir>/<id>/rootfs` first (see
    /// [`RuntimeConfig::state_dir`]) and unmounted on destroy. Its page cache is dropped
    /// before the mount: the host may have rewritten it.
    BlockDevice {
        /// E.g. `/dev/vdb`.
        device: PathBuf,
        /// E.g. `ext4`.
        fstype: String,
        readonly: bool,
    },
}

/// The standard streams of a new process.
#[derive(Debug)]
pub enum StdioSpec {
    /// The child's ends of three pipes; the caller keeps the other ends and streams them. No
    /// stdin means `/dev/null`.
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A new pty of this size from the container's own devpts; the master comes back in
    /// [`ProcessHandle::pty_master`].
    Terminal { rows: u16, cols: u16 },
}

/// What [`Container::create`] makes a container of.
#[derive(Debug)]
pub struct CreateRequest {
    /// The container id, also the name of its cgroup and state directory: 1 to 128 letters,
    /// digits, `-`, `_` and `.` (else [`ContainerError::InvalidId`]).
    pub id: String,
    /// The OCI runtime spec. `root.path` must be absolute; the root filesystem itself is
    /// `rootfs`.
    pub spec: oci_spec::runtime::Spec,
    pub rootfs: RootfsSource,
    pub stdio: StdioSpec,
}

/// A process [`Container::create`] or [`Container::exec`] started.
#[derive(Debug)]
pub struct ProcessHandle {
    /// In the caller's pid namespace; a direct child of the caller, which reaps it.
    pub pid: i32,
    /// The pty master when the process was asked for a terminal ([`StdioSpec::Terminal`]).
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
    /// Bound on each setup step of an exec's child ([`RuntimeConfig::step_timeout`]).
    step_timeout: std::time::Duration,
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
