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
