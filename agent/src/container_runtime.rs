//! The server's `Runtime` on top of `rust_vm_container`, and the mapping of container errors
//! to protocol error codes.

use std::sync::Arc;

use oci_spec::runtime::{LinuxResources, Process};
use rust_vm_container::{
    CgroupConfig, Container, ContainerError, CreateRequest, ProcessHandle, RuntimeConfig, Stats,
    StdioSpec, Syscalls,
};
use rust_vm_protocol::{ErrorCode, ProtocolError};

use crate::server::runtime::{ContainerHandle, Runtime};
use rust_vm_protocol::error_chain;

pub struct ContainerRuntime {
    sys: Arc<dyn Syscalls>,
    config: RuntimeConfig,
}

impl ContainerRuntime {
    pub fn new(sys: Arc<dyn Syscalls>, config: RuntimeConfig) -> ContainerRuntime {
        ContainerRuntime { sys, config }
    }
}

/// The protocol error for a container error: its code, and its whole chain as the message.
fn to_protocol(e: ContainerError) -> ProtocolError {
    let code = match &e {
        ContainerError::InvalidSpec(_) | ContainerError::InvalidId { .. } => {
            ErrorCode::InvalidArgument
        }
        ContainerError::InvalidState { .. } => ErrorCode::FailedPrecondition,
        ContainerError::CgroupsDisabled { .. } => ErrorCode::Unsupported,
        ContainerError::UnknownProcess { .. } => ErrorCode::NotFound,
        ContainerError::Sys { .. }
        | ContainerError::InitFailed { .. }
        | ContainerError::Cgroup { .. }
        | ContainerError::Cleanup { .. } => ErrorCode::ContainerFailed,
    };
    ProtocolError::new(code, error_chain(&e))
}

impl Runtime for ContainerRuntime {
    fn create(
        &self,
        request: CreateRequest,
    ) -> Result<(Box<dyn ContainerHandle>, ProcessHandle), ProtocolError> {
        let (container, init) =
            Container::create_with_config(request, Arc::clone(&self.sys), self.config.clone())
                .map_err(to_protocol)?;
        Ok((Box::new(container), init))
    }

    fn cgroups_enabled(&self) -> bool {
        matches!(self.config.cgroups, CgroupConfig::V2 { .. })
    }
}

impl ContainerHandle for Container {
    fn start(&mut self) -> Result<(), ProtocolError> {
        Container::start(self).map_err(to_protocol)
    }

    fn exec(
        &mut self,
        process: &Process,
        stdio: StdioSpec,
    ) -> Result<ProcessHandle, ProtocolError> {
        Container::exec(self, process, stdio).map_err(to_protocol)
    }

    fn signal(&self, pid: i32, signal: i32) -> Result<(), ProtocolError> {
        Container::signal(self, pid, signal).map_err(to_protocol)
    }

    fn pids(&self) -> Result<Vec<i32>, ProtocolError> {
        Container::pids(self).map_err(to_protocol)
    }

    fn stats(&self) -> Result<Stats, ProtocolError> {
        Container::stats(self).map_err(to_protocol)
    }

    fn update(&mut self, resources: &LinuxResources) -> Result<(), ProtocolError> {
        Container::update(self, resources).map_err(to_protocol)
    }

    fn destroy(self: Box<Self>) -> Result<(), ProtocolError> {
        Container::destroy(*self).map_err(to_protocol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_protocol_error_carries_the_code_and_the_whole_chain() {
        let e = ContainerError::Cgroup {
            id: "c".into(),
            path: "/sys/fs/cgroup/rust-vm/c".into(),
            what: "writing memory.max".into(),
            source: std::io::Error::from_raw_os_error(libc::EBUSY),
        };
        let p = to_protocol(e);
        assert_eq!(p.code, ErrorCode::ContainerFailed);
        assert_eq!(
            p.message,
            "container c: cgroup /sys/fs/cgroup/rust-vm/c: writing memory.max: \
             Device or resource busy (os error 16)"
        );
    }
}
