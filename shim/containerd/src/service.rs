//! The containerd task API (`containerd.task.v2.Task` / `v3`) over one pod sandbox.
//!
//! One shim daemon serves one pod: the container that owns the sandbox (a CRI sandbox
//! container, or a plain `ctr run` container) starts it on `create`; containers of the same
//! pod join it; the sandbox is shut down when the last container is deleted. Every operation
//! on a container becomes a request to the agent in the sandbox.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use containerd_shim::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::cgroups_v2::metrics::{
    CPUStat, MemoryEvents, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::events::task::{TaskCreate, TaskIO};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::types::mount::Mount;
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::{ExitSignal, TtrpcContext, TtrpcResult};
use oci_spec::runtime::{LinuxResources, Spec};
use rust_vm_protocol::{ClientError, ContainerStats, ErrorCode, Exec};
use rust_vm_sandbox::hooks::{self, OciState, Stage};
use rust_vm_sandbox::sizing::PodResources;
use rust_vm_sandbox::{Chain, NewContainer, Pod};

use crate::config;
use crate::error::{Result, ShimError};
use crate::events::{self, EventSender};
use crate::mounts;
use crate::pod::{valid_id, PodRole};
use crate::process::{Exit, Phase, Process};
use crate::sandbox;
use crate::stdio::{ProcessIo, StdioPaths};

/// How long an exited process's output may take to drain before its exit is reported.
const OUTPUT_GRACE: Duration = Duration::from_secs(5);
/// How often the running containers' OOM-kill counts are read.
const OOM_POLL: Duration = Duration::from_secs(2);
/// Reported when the agent can no longer tell how a process ended (the sandbox died).
const UNKNOWN_EXIT: u32 = 255;
const METRICS_V2_TYPE: &str = "io.containerd.cgroups.v2.Metrics";

struct Container {
    id: String,
    bundle: String,
    /// Where the rootfs is mounted (or found, when containerd passed no mounts).
    rootfs: PathBuf,
    /// Whether this container's create mounted `rootfs` (and delete must unmount it).
    mounted: bool,
    /// Whether this container started the pod's sandbox.
    owns_sandbox: bool,
    init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    /// OOM kills already reported.
    oom_kills: AtomicU64,
    /// The bundle's spec: its poststart and poststop hooks run here.
    spec: Spec,
}

impl Container {
    /// Runs the container's `stage` hooks on the host (the hook rule of
    /// `rust_vm_sandbox::hooks`). poststart and poststop failures are warnings, as the runtime
    /// spec says: the process already runs, or is gone.
    fn run_host_hooks(&self, stage: Stage, status: &str, pid: u32) {
        let pid = i32::try_from(pid).unwrap_or(0);
        let state = OciState::new(&self.id, status, pid, Path::new(&self.bundle), &self.spec);
        if let Err(err) = hooks::run(&self.spec, stage, &state) {
            log::warn!("container {}: {}", self.id, Chain(&err));
        }
    }

    /// Records the agent's OOM-kill count; true when it rose since last seen.
    fn note_oom_kills(&self, kills: u64) -> bool {
        kills > self.oom_kills.fetch_max(kills, Ordering::SeqCst)
    }

    fn execs(&self) -> MutexGuard<'_, HashMap<String, Arc<Process>>> {
        self.execs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(Arc::clone(&self.init));
        }
        self.execs().get(exec_id).cloned().ok_or_else(|| {
            ShimError::NotFound(format!("exec {exec_id} not found in container {}", self.id))
        })
    }
}

#[derive(Default)]
struct PodState {
    sandbox: Option<Arc<Pod>>,
    containers: HashMap<String, Arc<Container>>,
}

pub struct Service {
    namespace: String,
    config_path: PathBuf,
    events: Arc<EventSender>,
    exit: Arc<ExitSignal>,
    pod: Arc<Mutex<PodState>>,
    /// Serialises create and delete: they start and stop the sandbox, which takes a while, and
    /// must not interleave; state queries meanwhile only take `pod` briefly.
    lifecycle: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn pid_u32(pid: i32) -> u32 {
    u32::try_from(pid).unwrap_or(0)
}

fn exec_ref(exec_id: &str) -> Option<&str> {
    (!exec_id.is_empty()).then_some(exec_id)
}

impl Service {
    pub fn new(
        namespace: String,
        config_path: PathBuf,
        events: EventSender,
        exit: Arc<ExitSignal>,
    ) -> Service {
        Service {
            namespace,
            config_path,
            events: Arc::new(events),
            exit,
            pod: Arc::new(Mutex::new(PodState::default())),
            lifecycle: Mutex::new(()),
        }
    }

    fn container(&self, id: &str) -> Result<Arc<Container>> {
        lock(&self.pod)
            .containers
            .get(id)
            .cloned()
            .ok_or_else(|| ShimError::NotFound(format!("container {id} not found")))
    }

    fn sandbox(&self) -> Result<Arc<Pod>> {
        lock(&self.pod)
            .sandbox
            .clone()
            .ok_or_else(|| ShimError::FailedPrecondition("the pod has no sandbox".into()))
    }

    /// Stops the sandbox if one still runs (shim exit), unmounting what is left.
    pub fn shutdown_sandbox(&self) {
        let _serial = lock(&self.lifecycle);
        let (sandbox, containers) = {
            let mut pod = lock(&self.pod);
            (pod.sandbox.take(), std::mem::take(&mut pod.containers))
        };
        for container in containers.values() {
            let execs: Vec<_> = container.execs().values().cloned().collect();
            for process in execs.iter().chain([&container.init]) {
                if let Some(io) = process.io() {
                    io.release();
                }
            }
            self.unmount(container, sandbox.as_deref());
        }
        if let Some(sandbox) = sandbox {
            if let Err(err) = sandbox.shutdown() {
                log::warn!("{}", Chain(&err));
            }
        }
    }

    fn unmount(&self, container: &Container, sandbox: Option<&Pod>) {
        if !container.mounted {
            return;
        }
        let result = match sandbox {
            Some(sandbox) if !container.owns_sandbox => {
                sandbox::unmount_rootfs(sandbox, &container.rootfs)
                    .map_err(|e| Chain(&e).to_string())
            }
            _ => mounts::unmount_rootfs(&container.rootfs).map_err(|e| Chain(&e).to_string()),
        };
        if let Err(err) = result {
            log::warn!("unmount rootfs of {}: {err}", container.id);
        }
    }

    /// The sandbox a new container runs in, with its rootfs mounted where the agent sees it:
    /// a new one for a pod's owner (started from its rootfs and spec), the pod's for a member.
    fn sandbox_for(
        &self,
        role: &PodRole,
        id: &str,
        options: Option<&Any>,
        rootfs: (&[Mount], &Path),
        spec: &Spec,
        pod: Option<PodResources>,
    ) -> Result<(Arc<Pod>, bool)> {
        let (mounts, rootfs) = rootfs;
        match role {
            PodRole::Sandbox { .. } => {
                if let Some(existing) = &lock(&self.pod).sandbox {
                    return Err(ShimError::FailedPrecondition(format!(
                        "this shim serves sandbox {}; container {id} does not name it in {}",
                        existing.id(),
                        crate::pod::SANDBOX_ID
                    )));
                }
                let config_path = match options {
                    Some(options) => config::config_path(Some(options))
                        .map_err(|e| ShimError::InvalidArgument(Chain(&e).to_string()))?,
                    None => self.config_path.clone(),
                };
                mounts::mount_rootfs(mounts, rootfs)
                    .map_err(|e| ShimError::internal("rootfs", &e))?;
                match sandbox::start(&self.namespace, id, &config_path, rootfs, spec, pod) {
                    Ok(sandbox) => Ok((Arc::new(sandbox), true)),
                    Err(err) => {
                        if !mounts.is_empty() {
                            let _ = mounts::unmount_rootfs(rootfs);
                        }
                        Err(ShimError::internal("starting the sandbox", &err))
                    }
                }
            }
            PodRole::Container { sandbox_id } => {
                let sandbox = self.sandbox()?;
                if sandbox.id() != sandbox_id {
                    return Err(ShimError::FailedPrecondition(format!(
                        "container {id} names sandbox {sandbox_id}, this shim serves {}",
                        sandbox.id()
                    )));
                }
                sandbox::mount_rootfs(&sandbox, mounts, rootfs)
                    .map_err(|e| ShimError::internal("rootfs", &e))?;
                Ok((sandbox, false))
            }
        }
    }

    fn do_create(
        &self,
        req: CreateTaskRequest,
        deadline: Option<Instant>,
    ) -> Result<CreateTaskResponse> {
        let _serial = lock(&self.lifecycle);
        let id = req.id.clone();
        if !valid_id(&id) {
            return Err(ShimError::InvalidArgument(format!(
                "container id `{id}` is not valid"
            )));
        }
        if lock(&self.pod).containers.contains_key(&id) {
            return Err(ShimError::AlreadyExists(format!(
                "container {id} already exists"
            )));
        }
        let bundle = PathBuf::from(&req.bundle);
        let spec_path = bundle.join("config.json");
        let spec = Spec::load(&spec_path).map_err(|e| {
            ShimError::InvalidArgument(format!("bundle spec {}: {e}", spec_path.display()))
        })?;
        let annotations = spec.annotations().clone().unwrap_or_default();
        let role = PodRole::from_annotations(&id, &annotations)
            .map_err(|e| ShimError::InvalidArgument(Chain(&e).to_string()))?;
        let pod = PodRole::starts_a_pod(&annotations)
            .then(|| PodResources::from_annotations(&annotations))
            .transpose()
            .map_err(|e| ShimError::InvalidArgument(e.to_string()))?;
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        stdio
            .validate()
            .map_err(|e| ShimError::InvalidArgument(Chain(&e).to_string()))?;
        let mounted = !req.rootfs.is_empty();
        let rootfs = if mounted {
            bundle.join("rootfs")
        } else {
            let root = spec
                .root()
                .as_ref()
                .map(|r| r.path().clone())
                .ok_or_else(|| {
                    ShimError::InvalidArgument(
                        "root.path is missing and containerd passed no rootfs mounts".into(),
                    )
                })?;
            bundle.join(root)
        };

        let (sandbox, owns_sandbox) = self.sandbox_for(
            &role,
            &id,
            req.options.as_ref(),
            (&req.rootfs, &rootfs),
            &spec,
            pod,
        )?;
        let container = Container {
            id: id.clone(),
            bundle: req.bundle.clone(),
            rootfs: rootfs.clone(),
            mounted,
            owns_sandbox,
            init: Arc::new(Process::new(&id, None, stdio.clone(), None)),
            execs: Mutex::new(HashMap::new()),
            oom_kills: AtomicU64::new(0),
            spec: spec.clone(),
        };
        let undo = |container: &Container| {
            self.unmount(container, Some(&sandbox));
            if owns_sandbox {
                if let Err(err) = sandbox.shutdown() {
                    log::warn!("{}", Chain(&err));
                }
            }
        };

        let new = NewContainer {
            id: &id,
            bundle: &bundle,
            spec: &spec,
            rootfs: &rootfs,
            terminal: req.terminal,
            console_size: None,
            stdin: !stdio.stdin.is_empty(),
            deadline,
        };
        let created = match sandbox.create_container(&new, |pod| {
            ProcessIo::attach(pod.client(), &id, None, &stdio)
        }) {
            Ok(created) => created,
            Err(err) => {
                undo(&container);
                return Err(err.into());
            }
        };
        let (pid, io) = (pid_u32(created.pid), created.stdio);
        container.init.set_created(pid, io);

        let container = Arc::new(container);
        {
            let mut pod = lock(&self.pod);
            if owns_sandbox {
                pod.sandbox = Some(Arc::clone(&sandbox));
            }
            pod.containers.insert(id.clone(), Arc::clone(&container));
        }
        if owns_sandbox {
            self.watch_oom(&sandbox);
        }
        self.events.task_create(TaskCreate {
            container_id: id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: Some(TaskIO {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                terminal: req.terminal,
                ..Default::default()
            })
            .into(),
            pid,
            ..Default::default()
        });
        log::info!(
            "created container {id} (pid {pid}) in sandbox {}",
            sandbox.id()
        );
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    /// Reports OOM kills in the pod's running containers as they happen (the agent counts them
    /// from cgroup v2 `memory.events`), until the sandbox is gone. An agent without cgroups has
    /// no such count; then the exit-time check in [`Service::watch`] is all there is.
    fn watch_oom(&self, sandbox: &Arc<Pod>) {
        let sandbox = Arc::downgrade(sandbox);
        let pod = Arc::clone(&self.pod);
        let events = Arc::clone(&self.events);
        let spawned = thread::Builder::new()
            .name("oom-watch".into())
            .spawn(move || loop {
                thread::sleep(OOM_POLL);
                let Some(sandbox) = sandbox.upgrade() else {
                    return;
                };
                let running: Vec<Arc<Container>> = {
                    let pod = lock(&pod);
                    if !pod
                        .sandbox
                        .as_ref()
                        .is_some_and(|s| Arc::ptr_eq(s, &sandbox))
                    {
                        return;
                    }
                    pod.containers
                        .values()
                        .filter(|c| c.init.phase() == Phase::Running)
                        .cloned()
                        .collect()
                };
                for container in running {
                    match sandbox.client().stats(&container.id) {
                        Ok(stats) => {
                            if container.note_oom_kills(stats.oom_kills.unwrap_or(0)) {
                                events.task_oom(&container.id);
                            }
                        }
                        Err(err) if err.code() == Some(ErrorCode::Unsupported) => {
                            log::info!("sandbox {}: no OOM counts ({err})", sandbox.id());
                            return;
                        }
                        Err(err) => log::debug!("OOM count of {}: {err}", container.id),
                    }
                }
            });
        if let Err(err) = spawned {
            log::warn!("no OOM watch for sandbox: {err}");
        }
    }

    /// Waits for `process` in the agent on a thread of its own and reports its exit.
    fn watch(&self, sandbox: Arc<Pod>, container: Arc<Container>, process: Arc<Process>) {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        if process.watched.swap(true, Ordering::SeqCst) {
            return;
        }
        let events = Arc::clone(&self.events);
        let name = format!("wait-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let label = format!("{} of {}", process.event_id(), container.id);
        let spawned = thread::Builder::new().name(name).spawn(move || {
            let client = sandbox.client();
            let exec = process.exec_id.as_deref();
            let status = match client.wait(&container.id, exec) {
                Ok(status) => u32::try_from(status.exit_code).unwrap_or(UNKNOWN_EXIT),
                Err(err) => {
                    log::warn!("wait for {} of {}: {err}", process.event_id(), container.id);
                    UNKNOWN_EXIT
                }
            };
            if let Some(io) = process.io() {
                io.wait_output(OUTPUT_GRACE);
            }
            // containerd (CRI) reads an OOM event before the exit as "OOMKilled".
            if let Ok(stats) = client.stats(&container.id) {
                if container.note_oom_kills(stats.oom_kills.unwrap_or(0)) {
                    events.task_oom(&container.id);
                }
            }
            if process.set_exited(status) {
                let exit = process.exit().unwrap_or(Exit {
                    status,
                    at: events::now(),
                });
                events.task_exit(
                    &container.id,
                    process.event_id(),
                    process.pid(),
                    status,
                    exit.at,
                );
            }
        });
        if let Err(err) = spawned {
            log::error!("cannot watch {label}: {err}");
        }
    }

    fn do_start(&self, req: StartRequest) -> Result<StartResponse> {
        let container = self.container(&req.id)?;
        let process = container.process(&req.exec_id)?;
        let sandbox = self.sandbox()?;
        if process.phase() != Phase::Created {
            return Err(ShimError::FailedPrecondition(format!(
                "{} of container {} is {:?}, not created",
                process.event_id(),
                req.id,
                process.phase()
            )));
        }
        let client = sandbox.client();
        let pid = match &process.exec_id {
            None => {
                client
                    .start(&req.id)
                    .map_err(|e| ShimError::agent(format!("start container {}", req.id), e))?;
                process.pid()
            }
            Some(exec_id) => {
                let spec = process.exec_spec.clone().ok_or_else(|| {
                    ShimError::Internal(format!("exec {exec_id} has no process spec"))
                })?;
                let started = client
                    .exec(Exec {
                        container_id: req.id.clone(),
                        exec_id: exec_id.clone(),
                        process: Box::new(spec),
                        console_size: None,
                        stdin: !process.stdio.stdin.is_empty(),
                    })
                    .map_err(|e| ShimError::agent(format!("exec {exec_id} in {}", req.id), e))?;
                let io = match ProcessIo::attach(client, &req.id, Some(exec_id), &process.stdio) {
                    Ok(io) => io,
                    Err(err) => {
                        // No stdio, no exec: do not leave it running unseen in the sandbox.
                        let _ = client.signal(&req.id, Some(exec_id), libc::SIGKILL, false);
                        let _ = client.wait(&req.id, Some(exec_id));
                        let _ = client.remove_exec(&req.id, exec_id);
                        return Err(ShimError::internal("attaching the exec's stdio", &err));
                    }
                };
                let pid = pid_u32(sandbox.host_pid(started.pid));
                process.set_created(pid, io);
                pid
            }
        };
        process.set_running();
        if process.exec_id.is_none() {
            container.run_host_hooks(Stage::Poststart, "running", pid);
        }
        self.watch(
            Arc::clone(&sandbox),
            Arc::clone(&container),
            Arc::clone(&process),
        );
        match &process.exec_id {
            None => self.events.task_start(&req.id, pid),
            Some(exec_id) => self.events.exec_started(&req.id, exec_id, pid),
        }
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn do_delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        let _serial = lock(&self.lifecycle);
        let container = self.container(&req.id)?;
        let process = container.process(&req.exec_id)?;
        if process.phase() == Phase::Running {
            return Err(ShimError::FailedPrecondition(format!(
                "{} of container {} is running; kill it first",
                process.event_id(),
                req.id
            )));
        }
        // A process that never ran has no exit; containerd still wants one.
        let exit = process.exit().unwrap_or(Exit {
            status: 0,
            at: events::now(),
        });
        if let Some(io) = process.io() {
            io.release();
        }
        let response = DeleteResponse {
            pid: process.pid(),
            exit_status: exit.status,
            exited_at: Some(exit.at.clone()).into(),
            ..Default::default()
        };
        if let Some(exec_id) = &process.exec_id {
            // An exec that never started is unknown to the agent.
            let sandbox = lock(&self.pod).sandbox.clone();
            if process.pid() != 0 {
                if let Some(sandbox) = sandbox {
                    match sandbox.client().remove_exec(&req.id, exec_id) {
                        Ok(()) => {}
                        Err(err) if err.code() == Some(ErrorCode::NotFound) => {}
                        Err(err) => log::warn!("remove exec {exec_id} of {}: {err}", req.id),
                    }
                }
            }
            container.execs().remove(exec_id);
            return Ok(response);
        }

        let sandbox = lock(&self.pod).sandbox.clone();
        if let Some(sandbox) = &sandbox {
            if let Err(err) = sandbox.remove_container(&req.id, &container.rootfs) {
                log::warn!("{}", Chain(&err));
            }
        }
        self.unmount(&container, sandbox.as_deref());
        container.run_host_hooks(Stage::Poststop, "stopped", 0);
        let last = {
            let mut pod = lock(&self.pod);
            pod.containers.remove(&req.id);
            pod.containers.is_empty()
        };
        self.events
            .task_delete(&req.id, process.pid(), exit.status, exit.at);
        if last {
            let sandbox = lock(&self.pod).sandbox.take();
            if let Some(sandbox) = sandbox {
                log::info!(
                    "last container gone, shutting sandbox {} down",
                    sandbox.id()
                );
                if let Err(err) = sandbox.shutdown() {
                    log::warn!("{}", Chain(&err));
                }
            }
        }
        Ok(response)
    }

    fn do_exec(&self, req: ExecProcessRequest) -> Result<()> {
        let container = self.container(&req.id)?;
        if container.init.phase() != Phase::Running {
            return Err(ShimError::FailedPrecondition(format!(
                "container {} is {:?}; exec needs it running",
                req.id,
                container.init.phase()
            )));
        }
        if !valid_id(&req.exec_id) {
            return Err(ShimError::InvalidArgument(format!(
                "exec id `{}` is not valid",
                req.exec_id
            )));
        }
        let any = req
            .spec
            .as_ref()
            .ok_or_else(|| ShimError::InvalidArgument("exec request has no process spec".into()))?;
        let spec: oci_spec::runtime::Process = serde_json::from_slice(&any.value)
            .map_err(|e| ShimError::InvalidArgument(format!("exec process spec: {e}")))?;
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        stdio
            .validate()
            .map_err(|e| ShimError::InvalidArgument(Chain(&e).to_string()))?;
        {
            let mut execs = container.execs();
            if execs.contains_key(&req.exec_id) {
                return Err(ShimError::AlreadyExists(format!(
                    "exec {} already exists in container {}",
                    req.exec_id, req.id
                )));
            }
            let process = Process::new(&req.id, Some(&req.exec_id), stdio, Some(spec));
            execs.insert(req.exec_id.clone(), Arc::new(process));
        }
        self.events.exec_added(&req.id, &req.exec_id);
        Ok(())
    }

    fn do_kill(&self, req: KillRequest) -> Result<()> {
        let container = self.container(&req.id)?;
        let process = container.process(&req.exec_id)?;
        if process.phase() == Phase::Stopped {
            return Err(ShimError::NotFound(format!(
                "{} of container {}: process already finished",
                process.event_id(),
                req.id
            )));
        }
        let signal = i32::try_from(req.signal)
            .map_err(|_| ShimError::InvalidArgument(format!("signal {} is invalid", req.signal)))?;
        let sandbox = self.sandbox()?;
        sandbox
            .client()
            .signal(&req.id, exec_ref(&req.exec_id), signal, req.all)
            .map_err(|e| ShimError::agent(format!("signal {signal} to {}", req.id), e))?;
        // A created init killed before start still ends; somebody has to see it end.
        if process.exec_id.is_none() && process.phase() == Phase::Created {
            self.watch(sandbox, Arc::clone(&container), process);
        }
        Ok(())
    }

    fn do_state(&self, req: StateRequest) -> Result<StateResponse> {
        let container = self.container(&req.id)?;
        let process = container.process(&req.exec_id)?;
        let exit = process.exit();
        Ok(StateResponse {
            id: req.id.clone(),
            bundle: container.bundle.clone(),
            pid: process.pid(),
            status: process.phase().status().into(),
            stdin: process.stdio.stdin.clone(),
            stdout: process.stdio.stdout.clone(),
            stderr: process.stdio.stderr.clone(),
            terminal: process.stdio.terminal,
            exit_status: exit.as_ref().map_or(0, |e| e.status),
            exited_at: exit.map(|e| e.at).into(),
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    /// The refusal of a task call rust-vm does not implement, for an existing container.
    fn unsupported(&self, id: &str, call: &str, verb: &str) -> Result<ShimError> {
        self.container(id)?;
        Ok(ShimError::Unimplemented(format!(
            "{call} of {id}: rust-vm does not {verb} tasks"
        )))
    }

    /// One agent call about container `id` (which must exist here); its error names `what`.
    fn ask_agent<T>(
        &self,
        id: &str,
        what: &str,
        call: impl FnOnce(&rust_vm_protocol::Client) -> std::result::Result<T, ClientError>,
    ) -> Result<T> {
        self.container(id)?;
        call(self.sandbox()?.client()).map_err(|e| ShimError::agent(format!("{what} of {id}"), e))
    }

    fn do_pids(&self, req: PidsRequest) -> Result<PidsResponse> {
        let pids = self.ask_agent(&req.id, "list processes", |c| c.list_processes(&req.id))?;
        Ok(PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid: pid_u32(pid),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn do_stats(&self, req: StatsRequest) -> Result<StatsResponse> {
        let stats = self.ask_agent(&req.id, "stats", |c| c.stats(&req.id))?;
        let value = metrics(&stats)
            .write_to_bytes()
            .map_err(|e| ShimError::internal("encode metrics", &e))?;
        Ok(StatsResponse {
            stats: Some(Any {
                type_url: METRICS_V2_TYPE.into(),
                value,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
    }

    fn do_update(&self, req: UpdateTaskRequest) -> Result<()> {
        self.container(&req.id)?;
        let any = req
            .resources
            .as_ref()
            .ok_or_else(|| ShimError::InvalidArgument("update request has no resources".into()))?;
        let resources: LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| ShimError::InvalidArgument(format!("linux resources: {e}")))?;
        self.sandbox()?
            .client()
            .update_resources(&req.id, resources)
            .map_err(|e| ShimError::agent(format!("update resources of {}", req.id), e))
    }

    fn do_resize_pty(&self, req: ResizePtyRequest) -> Result<()> {
        let container = self.container(&req.id)?;
        container.process(&req.exec_id)?;
        let size = |v: u32, what: &str| {
            u16::try_from(v).map_err(|_| {
                ShimError::InvalidArgument(format!("terminal {what} {v} is too large"))
            })
        };
        let (rows, cols) = (size(req.height, "height")?, size(req.width, "width")?);
        self.sandbox()?
            .client()
            .resize_tty(&req.id, exec_ref(&req.exec_id), rows, cols)
            .map_err(|e| ShimError::agent(format!("resize terminal of {}", req.id), e))
    }

    fn do_close_io(&self, req: CloseIORequest) -> Result<()> {
        let container = self.container(&req.id)?;
        let process = container.process(&req.exec_id)?;
        if req.stdin {
            if let Some(io) = process.io() {
                io.close_stdin();
            }
        }
        Ok(())
    }
}

/// Agent stats as containerd's cgroup v2 metrics (the guest runs cgroup v2).
fn metrics(stats: &ContainerStats) -> Metrics {
    Metrics {
        pids: stats
            .pids_current
            .map(|current| PidsStat {
                current,
                limit: stats.pids_limit.unwrap_or(0),
                ..Default::default()
            })
            .into(),
        cpu: Some(CPUStat {
            usage_usec: stats.cpu_usage_ns / 1000,
            ..Default::default()
        })
        .into(),
        memory: stats
            .memory_usage_bytes
            .map(|usage| MemoryStat {
                usage,
                usage_limit: stats.memory_limit_bytes.unwrap_or(u64::MAX),
                ..Default::default()
            })
            .into(),
        memory_events: stats
            .oom_kills
            .map(|oom_kill| MemoryEvents {
                oom_kill,
                ..Default::default()
            })
            .into(),
        ..Default::default()
    }
}

/// Task calls that are one `do_` method each, the shim's error becoming a ttrpc status; the
/// `empty` ones answer containerd's `Empty`.
macro_rules! delegate {
    (
        values { $($name:ident($req:ty) -> $resp:ty => $method:ident;)* }
        empty { $($ename:ident($ereq:ty) => $emethod:ident;)* }
    ) => {
        $(
            fn $name(&self, _: &TtrpcContext, req: $req) -> TtrpcResult<$resp> {
                Ok(self.$method(req)?)
            }
        )*
        $(
            fn $ename(&self, _: &TtrpcContext, req: $ereq) -> TtrpcResult<Empty> {
                self.$emethod(req)?;
                Ok(Empty::new())
            }
        )*
    };
}

impl containerd_shim::Task for Service {
    delegate! {
        values {
            start(StartRequest) -> StartResponse => do_start;
            state(StateRequest) -> StateResponse => do_state;
            delete(DeleteRequest) -> DeleteResponse => do_delete;
            pids(PidsRequest) -> PidsResponse => do_pids;
            stats(StatsRequest) -> StatsResponse => do_stats;
        }
        empty {
            kill(KillRequest) => do_kill;
            exec(ExecProcessRequest) => do_exec;
            resize_pty(ResizePtyRequest) => do_resize_pty;
            close_io(CloseIORequest) => do_close_io;
            update(UpdateTaskRequest) => do_update;
        }
    }

    /// A create gives up at containerd's deadline for it, if the request carries one (ttrpc's
    /// `timeout_nano`), as well as at the sandbox's agent call timeout.
    fn create(
        &self,
        ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        let deadline = u64::try_from(ctx.timeout_nano)
            .ok()
            .filter(|&nanos| nanos > 0)
            .map(|nanos| Instant::now() + Duration::from_nanos(nanos));
        Ok(self.do_create(req, deadline)?)
    }

    fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let container = self.container(&req.id)?;
        let process = container.process(&req.exec_id)?;
        let exit = process.wait();
        Ok(WaitResponse {
            exit_status: exit.status,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        })
    }

    fn pause(&self, _: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        Err(self.unsupported(&req.id, "pause", "pause")?.into())
    }

    fn resume(&self, _: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        Err(self.unsupported(&req.id, "resume", "pause")?.into())
    }

    fn checkpoint(&self, _: &TtrpcContext, req: CheckpointTaskRequest) -> TtrpcResult<Empty> {
        Err(self
            .unsupported(&req.id, "checkpoint", "checkpoint")?
            .into())
    }

    fn connect(&self, _: &TtrpcContext, req: ConnectRequest) -> TtrpcResult<ConnectResponse> {
        let task_pid = self.container(&req.id).map(|c| c.init.pid()).unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _: &TtrpcContext, req: ShutdownRequest) -> TtrpcResult<Empty> {
        // One shim serves the whole pod: it stays while any container is left.
        if !req.now && !lock(&self.pod).containers.is_empty() {
            return Ok(Empty::new());
        }
        self.exit.signal();
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_from_agent_stats() {
        let stats = ContainerStats {
            cpu_usage_ns: 2_500_000,
            memory_usage_bytes: Some(4096),
            memory_limit_bytes: Some(1 << 20),
            pids_current: Some(3),
            pids_limit: None,
            oom_kills: Some(1),
        };
        let m = metrics(&stats);
        assert_eq!(m.cpu.usage_usec, 2500);
        assert_eq!(m.memory.usage, 4096);
        assert_eq!(m.memory.usage_limit, 1 << 20);
        assert_eq!(m.pids.current, 3);
        assert_eq!(m.memory_events.oom_kill, 1);
        let bytes = m.write_to_bytes().unwrap();
        assert_eq!(Metrics::parse_from_bytes(&bytes).unwrap(), m);
    }

    fn container(spec: Spec) -> Container {
        Container {
            id: "c".into(),
            bundle: "/b".into(),
            rootfs: PathBuf::new(),
            mounted: false,
            owns_sandbox: true,
            init: Arc::new(Process::new("c", None, StdioPaths::default(), None)),
            execs: Mutex::new(HashMap::new()),
            oom_kills: AtomicU64::new(0),
            spec,
        }
    }

    #[test]
    fn poststart_and_poststop_hooks_run_on_the_host_with_the_state() {
        use oci_spec::runtime::{HookBuilder, HooksBuilder, SpecBuilder};
        let dir = tempfile::tempdir().expect("tempdir");
        let hook = |name: &str| {
            let save = format!("cat > {}", dir.path().join(name).display());
            HookBuilder::default()
                .path("/bin/sh")
                .args(vec!["sh".to_string(), "-c".to_string(), save])
                .build()
                .expect("hook")
        };
        let hooks = HooksBuilder::default()
            .poststart(vec![hook("poststart.json")])
            .poststop(vec![hook("poststop.json")])
            .build()
            .expect("hooks");
        let c = container(SpecBuilder::default().hooks(hooks).build().expect("spec"));
        c.run_host_hooks(Stage::Poststart, "running", 42);
        c.run_host_hooks(Stage::Poststop, "stopped", 0);
        let read = |name: &str| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(dir.path().join(name)).expect(name))
                .expect("json")
        };
        let started = read("poststart.json");
        assert_eq!(
            (started["id"].as_str(), started["pid"].as_i64()),
            (Some("c"), Some(42))
        );
        assert_eq!(started["status"], "running");
        assert_eq!(started["bundle"], "/b");
        assert_eq!(read("poststop.json")["status"], "stopped");
    }

    #[test]
    fn oom_kills_are_reported_once_per_rise() {
        let c = container(Spec::default());
        assert!(!c.note_oom_kills(0));
        assert!(c.note_oom_kills(1));
        assert!(!c.note_oom_kills(1), "the same count twice is one event");
        assert!(c.note_oom_kills(3));
        assert!(
            !c.note_oom_kills(2),
            "a lower count (stale reply) is no event"
        );
    }

    fn service() -> Service {
        let (events, _rx) = EventSender::detached();
        Service::new(
            "test".into(),
            PathBuf::from("/nonexistent/config.toml"),
            events,
            Arc::new(ExitSignal::default()),
        )
    }

    #[test]
    fn unknown_containers_are_not_found() {
        let s = service();
        let err = s
            .do_state(StateRequest {
                id: "nope".into(),
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(err, ShimError::NotFound(_)), "{err}");
        let err = s
            .do_kill(KillRequest {
                id: "nope".into(),
                signal: 9,
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(err, ShimError::NotFound(_)), "{err}");
    }

    #[test]
    fn create_refuses_bad_ids_and_bundles_by_name() {
        let s = service();
        let err = s
            .do_create(
                CreateTaskRequest {
                    id: "../x".into(),
                    ..Default::default()
                },
                None,
            )
            .unwrap_err();
        assert!(err.to_string().contains("../x"), "{err}");
        let err = s
            .do_create(
                CreateTaskRequest {
                    id: "c1".into(),
                    bundle: "/nonexistent/bundle".into(),
                    ..Default::default()
                },
                None,
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/bundle/config.json"),
            "{err}"
        );
    }
}
