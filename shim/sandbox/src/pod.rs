//! A pod: one sandbox, owned by a thread of its own, and the containers created in it. This is
//! the one lifecycle the `rust-vm` CLI and the containerd shim share: start the sandbox, create
//! a container in it (hooks split off, rootfs source, create, stdio attach, host hooks, undo on
//! any failure), remove it (agent, then its rootfs slot), shut the sandbox down.
//!
//! The VMM (or agent) is spawned with a parent-death signal, which the kernel ties to the
//! *thread* that spawned it. Callers' threads come and go (ttrpc handlers), so the sandbox is
//! started and kept by a dedicated owner thread that lives until [`Pod::shutdown`]; if the process
//! dies, even by SIGKILL, the thread dies with it and so does the sandbox.
//!
//! The pid rule: [`Pod::host_pid`] is the pid a front-end reports for a process of the pod. On the
//! `namespaces` back-end it is the process's host pid (the agent's pid namespace is nested in
//! ours), as runc reports; on `vm` it is the VMM's pid (jailed, its waiter's, which exits with
//! the VMM's status), the process's host-side representative (as Kata reports), since the
//! process itself lives in the guest.

use std::error::Error;
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::OnceLock;
use std::thread;
use std::time::Instant;

use oci_spec::runtime::Spec;
use rust_vm_protocol::{
    Address, Client, ClientError, ConsoleSize, CreateContainer, ErrorCode, Operation, RootfsSource,
};

use crate::hooks::{self, HookError, OciState, Stage};
use crate::sandbox::process::host_pid_in_namespace;
use crate::{pod_namespaces, Backend, Chain, Sandbox, SandboxConfig, SandboxError};

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("starting sandbox {id}")]
    Start { id: String, source: SandboxError },
    #[error("sandbox {0}: its owner thread is gone")]
    OwnerGone(String),
    #[error("sandbox {id}")]
    Sandbox { id: String, source: SandboxError },
    #[error("connecting to the agent of sandbox {id}")]
    Connect { id: String, source: ClientError },
    #[error("cannot start the sandbox owner thread")]
    Thread(#[source] io::Error),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error("creating container {id:?} in the sandbox")]
    Create { id: String, source: ClientError },
    #[error("creating container {id:?} in the sandbox: {agent}")]
    SandboxDied {
        id: String,
        /// What the agent call said when the connection broke.
        agent: String,
        source: Box<SandboxError>,
    },
    #[error("attaching the stdio of container {id}")]
    Attach {
        id: String,
        source: Box<dyn Error + Send + Sync>,
    },
    #[error("removing container {id} from the agent")]
    Remove { id: String, source: ClientError },
    #[error("entering the mount namespace of sandbox {id} ({})", path.display())]
    EnterMountNamespace {
        id: String,
        path: PathBuf,
        source: io::Error,
    },
}

impl PodError {
    /// The agent's error code, when the agent refused the request.
    pub fn agent_code(&self) -> Option<ErrorCode> {
        match self {
            PodError::Create { source, .. } | PodError::Remove { source, .. } => source.code(),
            _ => None,
        }
    }
}

/// What the owner thread needs to prepare a container (see [`Sandbox::prepare_container`]).
struct Prepare {
    id: String,
    bundle: PathBuf,
    rootfs: PathBuf,
    spec: Spec,
}

type Prepared = (RootfsSource, Spec);

enum Command {
    Prepare(Box<Prepare>, Sender<Result<Prepared, SandboxError>>),
    Release(String, PathBuf, Sender<Result<(), SandboxError>>),
    CheckAlive(Sender<Result<(), SandboxError>>),
    Shutdown(Sender<Result<(), SandboxError>>),
}

/// A container to create in the pod.
pub struct NewContainer<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    /// The bundle's spec as given: its host-side hooks run here, the rest goes to the agent.
    pub spec: &'a Spec,
    /// Where the host sees the container's root filesystem: the bundle's rootfs directory, or
    /// where containerd's snapshot is mounted.
    pub rootfs: &'a Path,
    pub terminal: bool,
    pub console_size: Option<ConsoleSize>,
    pub stdin: bool,
    /// When the caller stops waiting (a ttrpc request's deadline): the agent's create is bounded
    /// by it as well as by the client's timeout.
    pub deadline: Option<Instant>,
}

/// A container the agent created, its init held before `execve` until started.
pub struct Created<S> {
    /// The init's pid in the agent's pid namespace (what the agent's calls take).
    pub guest_pid: i32,
    /// The pid to report ([`Pod::host_pid`]).
    pub pid: i32,
    /// What the caller's attach step returned.
    pub stdio: S,
}

/// A running sandbox, reachable from any thread.
pub struct Pod {
    id: String,
    backend: Backend,
    /// Host pid of the VMM (`vm`) or agent (`namespaces`).
    pid: u32,
    address: Address,
    client: Client,
    commands: Sender<Command>,
    /// The pid (in the agent's namespace) of the init of the pod's first container, the sandbox
    /// container whose namespaces the pod's other containers join.
    first_guest_pid: OnceLock<i32>,
}

impl Pod {
    /// Starts the sandbox on a new owner thread and waits for its agent (up to the configured
    /// agent timeout). Every agent call of the pod but `wait` is bounded by the same timeout: a
    /// silent guest cannot hold its caller for good.
    pub fn start(config: SandboxConfig) -> Result<Pod, PodError> {
        let id = config.id.clone();
        let backend = config.backend;
        let call_timeout = config.agent_timeout;
        let (ready_tx, ready_rx) = mpsc::channel();
        let (commands, command_rx) = mpsc::channel::<Command>();
        let owner_id = id.clone();
        thread::Builder::new()
            .name(format!("sandbox-{id}"))
            .spawn(move || {
                let mut sandbox = match Sandbox::start(config) {
                    Ok(sandbox) => sandbox,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok((sandbox.agent_address().clone(), sandbox.pid())));
                for command in command_rx {
                    match command {
                        Command::Prepare(p, reply) => {
                            let _ = reply.send(
                                sandbox.prepare_container(&p.id, &p.bundle, &p.rootfs, &p.spec),
                            );
                        }
                        Command::Release(id, rootfs, reply) => {
                            let _ = reply.send(sandbox.release_container(&id, &rootfs));
                        }
                        Command::CheckAlive(reply) => {
                            let _ = reply.send(sandbox.check_alive());
                        }
                        Command::Shutdown(reply) => {
                            let _ = reply.send(sandbox.shutdown());
                            return;
                        }
                    }
                }
                // Dropped without a shutdown: dropping the sandbox kills it.
                log::warn!("sandbox {owner_id}: dropped without shutdown, killing it");
            })
            .map_err(PodError::Thread)?;

        let (address, pid) = ready_rx
            .recv()
            .map_err(|_| PodError::OwnerGone(id.clone()))?
            .map_err(|source| PodError::Start {
                id: id.clone(),
                source,
            })?;
        let mut client =
            Client::connect_address(address.clone()).map_err(|source| PodError::Connect {
                id: id.clone(),
                source,
            })?;
        client.set_timeout(Some(call_timeout));
        log::info!("sandbox {id}: {backend} back-end up, pid {pid}");
        Ok(Pod {
            id,
            backend,
            pid,
            address,
            client,
            commands,
            first_guest_pid: OnceLock::new(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Host pid of the VMM (`vm`) or of the agent (`namespaces`).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The control connection to the agent (usable from many threads at once).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Where to reach the agent: stdio streams are attached here.
    pub fn agent_address(&self) -> &Address {
        &self.address
    }

    /// The pid to report for a process whose pid in the agent's namespace is `guest_pid` (the
    /// pid rule in the module documentation).
    pub fn host_pid(&self, guest_pid: i32) -> i32 {
        let vmm = i32::try_from(self.pid).unwrap_or(0);
        match self.backend {
            Backend::Vm => vmm,
            Backend::Namespaces => u32::try_from(guest_pid)
                .ok()
                .and_then(|guest| host_pid_in_namespace(self.pid, guest))
                .and_then(|host| i32::try_from(host).ok())
                .unwrap_or(guest_pid),
        }
    }

    fn ask<T>(
        &self,
        command: impl FnOnce(Sender<Result<T, SandboxError>>) -> Command,
    ) -> Result<T, PodError> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(command(tx))
            .map_err(|_| PodError::OwnerGone(self.id.clone()))?;
        rx.recv()
            .map_err(|_| PodError::OwnerGone(self.id.clone()))?
            .map_err(|source| PodError::Sandbox {
                id: self.id.clone(),
                source,
            })
    }

    /// `Err` with the VMM's (or agent's) exit status and logs once it has exited.
    pub fn check_alive(&self) -> Result<(), PodError> {
        self.ask(Command::CheckAlive)
    }

    /// Creates a container, its init held before `execve` until the agent's `start`: the one
    /// "create a container in this sandbox" sequence. `attach` connects the process's stdio (it
    /// runs after the agent created the container and before anything can be written). On any
    /// failure nothing of the container is left in the sandbox: the agent removed it and its rootfs
    /// slot is free.
    pub fn create_container<S, E>(
        &self,
        new: &NewContainer<'_>,
        attach: impl FnOnce(&Pod) -> Result<S, E>,
    ) -> Result<Created<S>, PodError>
    where
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        let prepare = Prepare {
            id: new.id.to_string(),
            bundle: new.bundle.to_path_buf(),
            rootfs: new.rootfs.to_path_buf(),
            spec: hooks::for_agent(new.spec)?,
        };
        let (rootfs, mut spec) = self.ask(|tx| Command::Prepare(Box::new(prepare), tx))?;
        if let Some(&first) = self.first_guest_pid.get() {
            let pod_pids = [self.pid, u32::try_from(self.host_pid(first)).unwrap_or(0)];
            for (from, to) in pod_namespaces::rewrite(&mut spec, &pod_pids, first) {
                log::debug!(
                    "sandbox {}: container {}: the pod's namespace {} is {} in the agent",
                    self.id,
                    new.id,
                    from.display(),
                    to.display()
                );
            }
        }
        let request = CreateContainer {
            container_id: new.id.to_string(),
            spec: Box::new(spec),
            rootfs,
            terminal: new.terminal,
            console_size: new.console_size,
            stdin: new.stdin,
        };
        let timeout = match (self.client.timeout(), new.deadline) {
            (bound, None) => bound,
            (bound, Some(deadline)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                Some(bound.map_or(left, |b| b.min(left)))
            }
        };
        let created = match self
            .client
            .call_within::<rust_vm_protocol::Created>(Operation::CreateContainer(request), timeout)
        {
            Ok(created) => created,
            // The agent may still be creating it, in its rootfs: the slot stays taken until the
            // sandbox goes.
            Err(err @ ClientError::Timeout { .. }) => {
                log::warn!(
                    "sandbox {}: container {} not created in time; its rootfs stays with the sandbox",
                    self.id,
                    new.id
                );
                return Err(PodError::Create {
                    id: new.id.to_string(),
                    source: err,
                });
            }
            Err(err) => {
                self.release_logged(new.id, new.rootfs);
                return Err(self.create_failure(new.id, err));
            }
        };
        let undo = || {
            if let Err(err) = self.remove_container(new.id, new.rootfs) {
                log::warn!("undoing the creation of {}: {}", new.id, Chain(&err));
            }
        };
        let stdio = match attach(self) {
            Ok(stdio) => stdio,
            Err(err) => {
                undo();
                return Err(PodError::Attach {
                    id: new.id.to_string(),
                    source: err.into(),
                });
            }
        };
        let pid = self.host_pid(created.pid);
        // The first container is the pod's sandbox container (CRI), whose namespaces later
        // containers name by the pid reported for it.
        let _ = self.first_guest_pid.set(created.pid);
        let state = OciState::new(new.id, "created", pid, new.bundle, new.spec);
        for stage in [Stage::Prestart, Stage::CreateRuntime] {
            if let Err(err) = hooks::run(new.spec, stage, &state) {
                drop(stdio);
                undo();
                return Err(err.into());
            }
        }
        Ok(Created {
            guest_pid: created.pid,
            pid,
            stdio,
        })
    }

    /// A failed create: when the connection broke because the VMM (or agent) died, say so with
    /// its logs.
    fn create_failure(&self, id: &str, err: ClientError) -> PodError {
        match self.check_alive() {
            Err(PodError::Sandbox { source, .. }) => PodError::SandboxDied {
                id: id.to_string(),
                agent: Chain(&err).to_string(),
                source: Box::new(source),
            },
            _ => PodError::Create {
                id: id.to_string(),
                source: err,
            },
        }
    }

    /// Removes a container from the agent (killing what is left of it; one it does not know is
    /// fine), then takes it out of the pod's share and frees the rootfs slot that `rootfs` took,
    /// so a later container can use it.
    pub fn remove_container(&self, id: &str, rootfs: &Path) -> Result<(), PodError> {
        match self.client.remove_container(id, true) {
            Ok(()) => {}
            Err(err) if err.code() == Some(ErrorCode::NotFound) => {}
            Err(source) => {
                return Err(PodError::Remove {
                    id: id.to_string(),
                    source,
                })
            }
        }
        self.ask(|tx| Command::Release(id.to_string(), rootfs.to_path_buf(), tx))
    }

    fn release_logged(&self, id: &str, rootfs: &Path) {
        if let Err(err) = self.ask(|tx| Command::Release(id.to_string(), rootfs.to_path_buf(), tx))
        {
            log::warn!(
                "releasing the share and rootfs slot of {id}: {}",
                Chain(&err)
            );
        }
    }

    /// Runs `f` where the sandbox's agent sees mounts: on the `namespaces` back-end the agent
    /// lives in a mount namespace of its own with private propagation, so a mount made on the
    /// host after the sandbox started would stay invisible to it; `f` then runs on a fresh thread
    /// that joined that namespace (after `unshare(CLONE_FS)`, which `setns` requires in a
    /// multi-threaded process). On `vm` it runs here.
    pub fn in_agent_mount_namespace<T, F>(&self, f: F) -> Result<T, PodError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if self.backend == Backend::Vm {
            return Ok(f());
        }
        let path = PathBuf::from(format!("/proc/{}/ns/mnt", self.pid));
        let enter_error = |source: io::Error| PodError::EnterMountNamespace {
            id: self.id.clone(),
            path: path.clone(),
            source,
        };
        let ns = fs::File::open(&path).map_err(enter_error)?;
        thread::Builder::new()
            .name("mount-ns".into())
            .spawn(move || -> io::Result<T> {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).map_err(io::Error::from)?;
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS)
                    .map_err(io::Error::from)?;
                Ok(f())
            })
            .map_err(PodError::Thread)?
            .join()
            .map_err(|_| enter_error(io::Error::other("the mount thread panicked")))?
            .map_err(enter_error)
    }

    /// Asks the agent to stop, stops what is left and removes the sandbox's files. A second call
    /// does nothing.
    pub fn shutdown(&self) -> Result<(), PodError> {
        let (tx, rx) = mpsc::channel();
        if self.commands.send(Command::Shutdown(tx)).is_err() {
            return Ok(());
        }
        match rx.recv() {
            Ok(result) => result.map_err(|source| PodError::Sandbox {
                id: self.id.clone(),
                source,
            }),
            Err(_) => Ok(()),
        }
    }
}
