//! What the server needs from a container implementation. The agent's real implementation is
//! the `container` module (see `container_runtime.rs`); unit tests use a plain-process fake so
//! the server is tested without root.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use oci_spec::runtime::{LinuxResources, Process, Spec};
use rust_vm_protocol::{ContainerStats, ProtocolError};

/// The standard streams handed to a new process.
pub enum StdioRequest {
    /// The child's ends of three pipes (stdin may be `/dev/null`); the server keeps the others.
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A new pty of this size; its master comes back in [`Spawned::pty_master`].
    Terminal { rows: u16, cols: u16 },
}

pub enum Rootfs {
    Directory(PathBuf),
    BlockDevice {
        device: PathBuf,
        fstype: String,
        readonly: bool,
    },
}

pub struct CreateParams {
    pub id: String,
    pub spec: Spec,
    pub rootfs: Rootfs,
    pub stdio: StdioRequest,
}

/// A process the runtime started. `pid` must be a direct child of the agent: the server's
/// reaper collects its exit status.
pub struct Spawned {
    pub pid: i32,
    pub pty_master: Option<OwnedFd>,
}

/// Creates containers. Errors are protocol errors, so the runtime decides which code fits.
pub trait Runtime: Send + Sync {
    /// Creates the container with its init process held before `execve` until `start`.
    fn create(
        &self,
        params: CreateParams,
    ) -> Result<(Box<dyn ContainerHandle>, Spawned), ProtocolError>;

    /// Whether containers get cgroups (stats and resource updates).
    fn cgroups_enabled(&self) -> bool;
}

/// One created container.
pub trait ContainerHandle: Send {
    fn start(&mut self) -> Result<(), ProtocolError>;
    fn exec(&mut self, process: &Process, stdio: StdioRequest) -> Result<Spawned, ProtocolError>;
    fn signal(&self, pid: i32, signal: i32) -> Result<(), ProtocolError>;
    /// Every process of the container.
    fn pids(&self) -> Result<Vec<i32>, ProtocolError>;
    fn stats(&self) -> Result<ContainerStats, ProtocolError>;
    fn update(&mut self, resources: &LinuxResources) -> Result<(), ProtocolError>;
    /// Kills what is left, unmounts, removes the cgroup.
    fn destroy(self: Box<Self>) -> Result<(), ProtocolError>;
}
