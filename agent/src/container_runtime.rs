//! The server's `Runtime` on top of the `container` module: request/handle conversion and the
//! mapping of container errors to protocol error codes.

use std::path::PathBuf;
use std::sync::Arc;

use oci_spec::runtime::{LinuxResources, Process, RootBuilder};
use rust_vm_protocol::{ContainerStats, ErrorCode, ProtocolError};

use crate::server::runtime::{
    ContainerHandle, CreateParams, Rootfs, Runtime, Spawned, StdioRequest,
};
use rust_vm_container::{
    CgroupConfig, Container, ContainerError, CreateRequest, ProcessHandle, RootfsSource,
    RuntimeConfig, StdioSpec, Syscalls,
};

pub struct ContainerRuntime {
    sys: Arc<dyn Syscalls>,
    config: RuntimeConfig,
}

impl ContainerRuntime {
    pub fn new(sys: Arc<dyn Syscalls>, config: RuntimeConfig) -> ContainerRuntime {
        ContainerRuntime { sys, config }
    }
}

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
    ProtocolError::new(code, e.to_string())
}

fn stdio_spec(stdio: StdioRequest) -> StdioSpec {
    match stdio {
        StdioRequest::Pipes {
            stdin,
            stdout,
            stderr,
        } => StdioSpec::Pipes {
            stdin: Some(stdin),
            stdout,
            stderr,
        },
        StdioRequest::Terminal { rows, cols } => StdioSpec::Terminal { rows, cols },
    }
}

fn spawned(handle: ProcessHandle) -> Spawned {
    Spawned {
        pid: handle.pid,
        pty_master: handle.pty_master,
    }
}

impl Runtime for ContainerRuntime {
    fn create(
        &self,
        params: CreateParams,
    ) -> Result<(Box<dyn ContainerHandle>, Spawned), ProtocolError> {
        let CreateParams {
            id,
            mut spec,
            rootfs,
            stdio,
        } = params;
        let terminal = matches!(stdio, StdioRequest::Terminal { .. });
        if let Some(mut process) = spec.process().clone() {
            process.set_terminal(Some(terminal));
            spec.set_process(Some(process));
        }
        // The protocol carries the rootfs apart from the spec; `root.path` follows it so the
        // spec stays self-consistent (its `readonly` is kept).
        let readonly = spec.root().as_ref().and_then(|r| r.readonly());
        let (source, root_path) = match rootfs {
            Rootfs::Directory(path) => (RootfsSource::Directory(path.clone()), path),
            Rootfs::BlockDevice {
                device,
                fstype,
                readonly,
            } => (
                RootfsSource::BlockDevice {
                    device,
                    fstype,
                    readonly,
                },
                spec.root()
                    .as_ref()
                    .map(|r| r.path().clone())
                    .filter(|p| p.is_absolute())
                    .unwrap_or_else(|| PathBuf::from("/")),
            ),
        };
        // Always set `readonly`: the builder starts from `Root::default()`, which is read-only,
        // while an absent `root.readonly` means writable.
        let root = RootBuilder::default()
            .path(root_path)
            .readonly(readonly.unwrap_or(false))
            .build()
            .map_err(|e| ProtocolError::new(ErrorCode::InvalidArgument, format!("root: {e}")))?;
        spec.set_root(Some(root));
        let request = CreateRequest {
            id,
            spec,
            rootfs: source,
            stdio: stdio_spec(stdio),
        };
        let (container, handle) =
            Container::create_with_config(request, Arc::clone(&self.sys), self.config.clone())
                .map_err(to_protocol)?;
        Ok((Box::new(Handle(container)), spawned(handle)))
    }

    fn cgroups_enabled(&self) -> bool {
        matches!(self.config.cgroups, CgroupConfig::V2 { .. })
    }
}

struct Handle(Container);

impl ContainerHandle for Handle {
    fn start(&mut self) -> Result<(), ProtocolError> {
        self.0.start().map_err(to_protocol)
    }

    fn exec(&mut self, process: &Process, stdio: StdioRequest) -> Result<Spawned, ProtocolError> {
        self.0
            .exec(process, stdio_spec(stdio))
            .map(spawned)
            .map_err(to_protocol)
    }

    fn signal(&self, pid: i32, signal: i32) -> Result<(), ProtocolError> {
        self.0.signal(pid, signal).map_err(to_protocol)
    }

    fn pids(&self) -> Result<Vec<i32>, ProtocolError> {
        self.0.pids().map_err(to_protocol)
    }

    fn stats(&self) -> Result<ContainerStats, ProtocolError> {
        let stats = self.0.stats().map_err(to_protocol)?;
        Ok(ContainerStats {
            cpu_usage_ns: stats.cpu_usage_usec.saturating_mul(1000),
            memory_usage_bytes: stats.memory_usage_bytes,
            memory_limit_bytes: stats.memory_limit_bytes,
            pids_current: stats.pids_current,
            pids_limit: stats.pids_limit,
            oom_kills: stats.oom_kills,
        })
    }

    fn update(&mut self, resources: &LinuxResources) -> Result<(), ProtocolError> {
        self.0.update(resources).map_err(to_protocol)
    }

    fn destroy(self: Box<Self>) -> Result<(), ProtocolError> {
        self.0.destroy().map_err(to_protocol)
    }
}
