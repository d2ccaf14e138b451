//! What the server needs from a container implementation, in the container library's own
//! types. The agent's real implementation is `rust_vm_container::Container` (see
//! `container_runtime.rs`); unit tests use a plain-process fake (`fake.rs`) so the server is
//! tested without root.

use oci_spec::runtime::{LinuxResources, Process};
use rust_vm_container::{CreateRequest, ProcessHandle, Stats, StdioSpec};
use rust_vm_protocol::ProtocolError;

/// Creates containers. Errors are protocol errors, so the runtime decides which code fits.
pub trait Runtime: Send + Sync {
    /// Creates the container with its init process held before `execve` until `start`. The
    /// returned pid must be a direct child of the agent: the server's reaper collects its
    /// exit status.
    fn create(
        &self,
        request: CreateRequest,
    ) -> Result<(Box<dyn ContainerHandle>, ProcessHandle), ProtocolError>;

    /// Whether containers get cgroups (stats and resource updates).
    fn cgroups_enabled(&self) -> bool;
}

/// One created container.
pub trait ContainerHandle: Send {
    fn start(&mut self) -> Result<(), ProtocolError>;
    fn exec(&mut self, process: &Process, stdio: StdioSpec)
        -> Result<ProcessHandle, ProtocolError>;
    fn signal(&self, pid: i32, signal: i32) -> Result<(), ProtocolError>;
    /// Every process of the container.
    fn pids(&self) -> Result<Vec<i32>, ProtocolError>;
    fn stats(&self) -> Result<Stats, ProtocolError>;
    fn update(&mut self, resources: &LinuxResources) -> Result<(), ProtocolError>;
    /// Kills what is left, unmounts, removes the cgroup.
    fn destroy(self: Box<Self>) -> Result<(), ProtocolError>;
}
