//! One function per operation.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_spec::runtime::{RootBuilder, Spec};
use rust_vm_container::{CreateRequest, ProcessHandle, RootfsSource, Stats, StdioSpec};
use rust_vm_protocol::{
    error_chain, AgentMode, ContainerState, ContainerStats, ContainerStatus, CreateContainer,
    Created, Empty, ErrorCode, Exec, ExecRef, ExecStarted, ExitStatus, NetworkConfig, ProcessRef,
    Processes, ProtocolError, RemoveContainer, ResizeTty, Signal, UpdateResources, WriteStdin,
};

use super::process::{ContainerEntry, ProcessEntry};
use super::stdio::{self, AttachFlag, ParentEnds};
use super::{lock, Hangup, Server};

/// How long a forced removal waits for the init process to die after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest container or exec id accepted.
const MAX_ID_LEN: usize = 256;

fn error(code: ErrorCode, message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(code, message)
}

fn check_id(what: &str, id: &str) -> Result<(), ProtocolError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(error(
            ErrorCode::InvalidArgument,
            format!("{what} must be 1 to {MAX_ID_LEN} bytes long"),
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        || id.starts_with('.')
    {
        return Err(error(
            ErrorCode::InvalidArgument,
            format!("{what} `{id}` may only contain letters, digits, `-`, `_` and `.`, and may not start with `.`"),
        ));
    }
    Ok(())
}

pub(super) fn internal(what: &str, e: impl std::fmt::Display) -> ProtocolError {
    error(ErrorCode::Internal, format!("{what}: {e}"))
}

impl Server {
    /// Guest mode only: the host-mode agent runs in the host's (or a test's) network namespace,
    /// which is not the pod's to change.
    pub(super) fn configure_network(&self, config: &NetworkConfig) -> Result<Empty, ProtocolError> {
        if self.mode == AgentMode::Host {
            return Err(error(
                ErrorCode::Unsupported,
                "configure_network: the host-mode agent has no VM network to configure",
            ));
        }
        crate::network::configure(config).map_err(|e| error(e.code(), error_chain(&e)))?;
        Ok(Empty {})
    }

    pub(super) fn container(&self, id: &str) -> Result<Arc<ContainerEntry>, ProtocolError> {
        lock(&self.registry)
            .containers
            .get(id)
            .cloned()
            .ok_or_else(|| error(ErrorCode::NotFound, format!("no container `{id}`")))
    }

    pub(super) fn process(
        &self,
        container_id: &str,
        exec_id: Option<&str>,
    ) -> Result<Arc<ProcessEntry>, ProtocolError> {
        let container = self.container(container_id)?;
        match exec_id {
            None => Ok(Arc::clone(&container.init)),
            Some(exec_id) => lock(&container.execs).get(exec_id).cloned().ok_or_else(|| {
                error(
                    ErrorCode::NotFound,
                    format!("container `{container_id}` has no exec `{exec_id}`"),
                )
            }),
        }
    }

    pub(super) fn create(&self, req: CreateContainer) -> Result<Created, ProtocolError> {
        let id = req.container_id.clone();
        check_id("container_id", &id)?;
        {
            let mut registry = lock(&self.registry);
            if registry.containers.contains_key(&id) || registry.creating.contains(&id) {
                return Err(error(
                    ErrorCode::AlreadyExists,
                    format!("container `{id}` already exists"),
                ));
            }
            registry.creating.insert(id.clone());
        }
        let created = self.create_reserved(req);
        let mut registry = lock(&self.registry);
        registry.creating.remove(&id);
        let entry = created?;
        let pid = entry.init.pid;
        registry.containers.insert(id.clone(), entry);
        log::info!("created container {id} (init pid {pid})");
        Ok(Created { pid })
    }

    fn create_reserved(&self, req: CreateContainer) -> Result<Arc<ContainerEntry>, ProtocolError> {
        let id = req.container_id;
        let spec_terminal = req
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        let terminal = req.terminal || spec_terminal;
        let (stdio, parent) =
            stdio::prepare(terminal, req.console_size.unwrap_or_default(), req.stdin)
                .map_err(|e| internal("creating stdio pipes", e))?;
        let request = create_request(id.clone(), *req.spec, req.rootfs, terminal, stdio)?;
        let guard = self.reaper.spawn_guard();
        let (handle, spawned) = self.runtime.create(request)?;
        let exit = guard.watch(spawned.pid);
        drop(guard);
        let label = format!("container `{id}`");
        let init = match new_process(spawned, exit, parent, label) {
            Ok(init) => init,
            Err(e) => {
                if let Err(destroy) = handle.destroy() {
                    log::error!("container {id}: cleaning up after a failed create: {destroy}");
                }
                return Err(e);
            }
        };
        Ok(Arc::new(ContainerEntry {
            id,
            handle: Mutex::new(Some(handle)),
            init: Arc::new(init),
            started: Mutex::new(false),
            execs: Mutex::new(HashMap::new()),
            execs_starting: Mutex::new(HashSet::new()),
        }))
    }

    pub(super) fn start(&self, id: &str) -> Result<Empty, ProtocolError> {
        let container = self.container(id)?;
        let mut started = lock(&container.started);
        if *started {
            return Err(error(
                ErrorCode::FailedPrecondition,
                format!("container `{id}` is already started"),
            ));
        }
        if !container.init.running() {
            return Err(error(
                ErrorCode::FailedPrecondition,
                format!("container `{id}` is stopped: its init process exited before start"),
            ));
        }
        container.with_handle(|h| h.start())?;
        *started = true;
        log::info!("started container {id}");
        Ok(Empty {})
    }

    pub(super) fn exec(&self, req: Exec) -> Result<ExecStarted, ProtocolError> {
        let container = self.container(&req.container_id)?;
        check_id("exec_id", &req.exec_id)?;
        let status = container.status();
        if status != ContainerStatus::Running {
            return Err(error(
                ErrorCode::FailedPrecondition,
                format!(
                    "cannot exec in container `{}`: it is {}",
                    req.container_id,
                    status_name(status)
                ),
            ));
        }
        let _reserved = ExecReservation::take(&container, &req.exec_id).ok_or_else(|| {
            error(
                ErrorCode::AlreadyExists,
                format!(
                    "exec `{}` already runs in container `{}`",
                    req.exec_id, req.container_id
                ),
            )
        })?;
        let terminal = req.process.terminal().unwrap_or(false);
        let (request, parent) =
            stdio::prepare(terminal, req.console_size.unwrap_or_default(), req.stdin)
                .map_err(|e| internal("creating stdio pipes", e))?;
        let (spawned, exit) = container.with_handle(|handle| {
            let guard = self.reaper.spawn_guard();
            let spawned = handle.exec(&req.process, request)?;
            let exit = guard.watch(spawned.pid);
            Ok((spawned, exit))
        })?;
        let pid = spawned.pid;
        let label = format!("exec `{}` of container `{}`", req.exec_id, req.container_id);
        let process = match new_process(spawned, exit, parent, label) {
            Ok(process) => process,
            Err(e) => {
                let _ = container.with_handle(|h| h.signal(pid, libc::SIGKILL));
                return Err(e);
            }
        };
        lock(&container.execs).insert(req.exec_id.clone(), Arc::new(process));
        log::info!(
            "exec {} in container {} (pid {pid})",
            req.exec_id,
            req.container_id
        );
        Ok(ExecStarted { pid })
    }

    pub(super) fn signal(&self, req: &Signal) -> Result<Empty, ProtocolError> {
        if !(1..=libc::SIGRTMAX()).contains(&req.signal) {
            return Err(error(
                ErrorCode::InvalidArgument,
                format!("signal {} is not a valid signal number", req.signal),
            ));
        }
        let container = self.container(&req.container_id)?;
        if req.all {
            container.with_handle(|h| {
                for pid in h.pids()? {
                    if let Err(e) = h.signal(pid, req.signal) {
                        // It may have exited meanwhile; the others still get the signal.
                        log::debug!("signal {} to pid {pid}: {e}", req.signal);
                    }
                }
                Ok(())
            })?;
            return Ok(Empty {});
        }
        let process = self.process(&req.container_id, req.exec_id.as_deref())?;
        if !process.running() {
            return Err(error(
                ErrorCode::FailedPrecondition,
                format!("{} has already exited", process.label),
            ));
        }
        container.with_handle(|h| h.signal(process.pid, req.signal))?;
        Ok(Empty {})
    }

    /// `None` when the client hung up first.
    pub(super) fn wait(
        &self,
        req: &ProcessRef,
        hangup: &Hangup,
    ) -> Result<Option<ExitStatus>, ProtocolError> {
        let process = self.process(&req.container_id, req.exec_id.as_deref())?;
        let _waiting = self.waiting_started();
        Ok(hangup.wait(&process.exit))
    }

    pub(super) fn write_stdin(
        &self,
        req: &WriteStdin,
        hangup: &Hangup,
    ) -> Result<Empty, ProtocolError> {
        let process = self.process(&req.container_id, req.exec_id.as_deref())?;
        let _waiting = self.waiting_started();
        process.stdio.stdin.write(&req.data, &|| hangup.is_gone())?;
        Ok(Empty {})
    }

    pub(super) fn close_stdin(&self, req: &ProcessRef) -> Result<Empty, ProtocolError> {
        let process = self.process(&req.container_id, req.exec_id.as_deref())?;
        process.stdio.stdin.close()?;
        Ok(Empty {})
    }

    pub(super) fn resize_tty(&self, req: &ResizeTty) -> Result<Empty, ProtocolError> {
        let process = self.process(&req.container_id, req.exec_id.as_deref())?;
        let master = process.stdio.pty_master.as_ref().ok_or_else(|| {
            error(
                ErrorCode::FailedPrecondition,
                format!("{} has no terminal", process.label),
            )
        })?;
        stdio::resize(master, req.rows, req.cols)
            .map_err(|e| internal("resizing the terminal", e))?;
        Ok(Empty {})
    }

    pub(super) fn list_processes(&self, id: &str) -> Result<Processes, ProtocolError> {
        let container = self.container(id)?;
        let mut pids = container.with_handle(|h| h.pids())?;
        pids.sort_unstable();
        Ok(Processes { pids })
    }

    pub(super) fn stats(&self, id: &str) -> Result<ContainerStats, ProtocolError> {
        self.container(id)?
            .with_handle(|h| h.stats())
            .map(wire_stats)
    }

    pub(super) fn update_resources(&self, req: &UpdateResources) -> Result<Empty, ProtocolError> {
        self.container(&req.container_id)?
            .with_handle(|h| h.update(&req.resources))?;
        Ok(Empty {})
    }

    pub(super) fn state(&self, id: &str) -> Result<ContainerState, ProtocolError> {
        let container = self.container(id)?;
        let mut execs: Vec<String> = lock(&container.execs).keys().cloned().collect();
        execs.sort();
        Ok(ContainerState {
            container_id: id.to_owned(),
            status: container.status(),
            pid: container.init.pid,
            exit: container.init.exit.get(),
            execs,
        })
    }

    pub(super) fn remove(&self, req: &RemoveContainer) -> Result<Empty, ProtocolError> {
        let id = &req.container_id;
        let container = self.container(id)?;
        if container.status() == ContainerStatus::Running {
            if !req.force {
                return Err(error(
                    ErrorCode::FailedPrecondition,
                    format!("container `{id}` is running; stop it first or remove with force"),
                ));
            }
            container.with_handle(|h| {
                let _ = h.signal(container.init.pid, libc::SIGKILL);
                for pid in h.pids().unwrap_or_default() {
                    let _ = h.signal(pid, libc::SIGKILL);
                }
                Ok(())
            })?;
            if container.init.exit.wait_timeout(KILL_TIMEOUT).is_none() {
                return Err(error(
                    ErrorCode::Internal,
                    format!(
                        "container `{id}`: init pid {} still runs {KILL_TIMEOUT:?} after SIGKILL",
                        container.init.pid
                    ),
                ));
            }
        }
        let handle = lock(&container.handle).take();
        // Forget the id even if destroy fails: the handle is gone and cannot be retried.
        lock(&self.registry).containers.remove(id);
        let Some(handle) = handle else {
            return Err(error(
                ErrorCode::NotFound,
                format!("container `{id}` is already being removed"),
            ));
        };
        handle.destroy()?;
        log::info!("removed container {id}");
        Ok(Empty {})
    }

    pub(super) fn remove_exec(&self, req: &ExecRef) -> Result<Empty, ProtocolError> {
        let container = self.container(&req.container_id)?;
        let mut execs = lock(&container.execs);
        let process = execs.get(&req.exec_id).ok_or_else(|| {
            error(
                ErrorCode::NotFound,
                format!(
                    "container `{}` has no exec `{}`",
                    req.container_id, req.exec_id
                ),
            )
        })?;
        if process.running() {
            return Err(error(
                ErrorCode::FailedPrecondition,
                format!("{} is still running", process.label),
            ));
        }
        execs.remove(&req.exec_id);
        Ok(Empty {})
    }
}

/// An exec id held from the check that it is free until its process is registered (or the
/// exec failed).
struct ExecReservation<'a> {
    container: &'a ContainerEntry,
    exec_id: &'a str,
}

impl<'a> ExecReservation<'a> {
    /// `None` when a running process or a starting exec has the id.
    fn take(container: &'a ContainerEntry, exec_id: &'a str) -> Option<Self> {
        // Lock order: execs, then execs_starting.
        let execs = lock(&container.execs);
        if execs.get(exec_id).is_some_and(|e| e.running()) {
            return None;
        }
        if !lock(&container.execs_starting).insert(exec_id.to_owned()) {
            return None;
        }
        Some(ExecReservation { container, exec_id })
    }
}

impl Drop for ExecReservation<'_> {
    fn drop(&mut self) {
        lock(&self.container.execs_starting).remove(self.exec_id);
    }
}

fn status_name(status: ContainerStatus) -> &'static str {
    match status {
        ContainerStatus::Created => "created but not started",
        ContainerStatus::Running => "running",
        ContainerStatus::Stopped => "stopped",
    }
}

/// The wire -> domain conversion of `create_container`. The protocol carries the rootfs and
/// the terminal apart from the spec; the spec is made to agree with them: `process.terminal`
/// follows the stdio, and `root.path` the rootfs (its `readonly` is kept).
fn create_request(
    id: String,
    mut spec: Spec,
    rootfs: rust_vm_protocol::RootfsSource,
    terminal: bool,
    stdio: StdioSpec,
) -> Result<CreateRequest, ProtocolError> {
    if let Some(mut process) = spec.process().clone() {
        process.set_terminal(Some(terminal));
        spec.set_process(Some(process));
    }
    let readonly = spec.root().as_ref().and_then(|r| r.readonly());
    let (rootfs, root_path) = match rootfs {
        rust_vm_protocol::RootfsSource::Directory { path } => {
            (RootfsSource::Directory(path.clone()), path)
        }
        rust_vm_protocol::RootfsSource::BlockDevice {
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
        .map_err(|e| error(ErrorCode::InvalidArgument, format!("root: {e}")))?;
    spec.set_root(Some(root));
    Ok(CreateRequest {
        id,
        spec,
        rootfs,
        stdio,
    })
}

/// The domain -> wire conversion of `stats`: the cgroup counts microseconds of CPU, the
/// protocol nanoseconds.
fn wire_stats(stats: Stats) -> ContainerStats {
    ContainerStats {
        cpu_usage_ns: stats.cpu_usage_usec.saturating_mul(1000),
        memory_usage_bytes: stats.memory_usage_bytes,
        memory_limit_bytes: stats.memory_limit_bytes,
        pids_current: stats.pids_current,
        pids_limit: stats.pids_limit,
        oom_kills: stats.oom_kills,
    }
}

fn new_process(
    spawned: ProcessHandle,
    exit: Arc<crate::reaper::ExitCell>,
    parent: ParentEnds,
    label: String,
) -> Result<ProcessEntry, ProtocolError> {
    let stdio = stdio::finish(parent, spawned.pty_master, &label)
        .map_err(|e| internal(&format!("{label}: starting stdio"), e))?;
    Ok(ProcessEntry {
        pid: spawned.pid,
        label,
        exit,
        stdio,
        stdin_attached: AttachFlag::default(),
    })
}
