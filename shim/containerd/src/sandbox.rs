//! The pod's sandbox (a microVM, or for tests the agent in host namespaces), started through
//! `rust_vm_sandbox::Sandbox` and owned by one long-lived thread.
//!
//! The VMM (or agent) is spawned with a parent-death signal, which the kernel ties to the
//! *thread* that spawned it. ttrpc handler threads come and go, so the sandbox is started and
//! kept by a dedicated owner thread that lives until the sandbox is shut down; if the shim
//! process dies (even by SIGKILL), the thread dies with it and so does the sandbox.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::thread;

use containerd_shim::protos::types::mount::Mount;
use rust_vm_protocol::{Address, Client, RootfsSource};
use rust_vm_sandbox::{Backend, RuntimeConfig, Sandbox, SandboxError};
use thiserror::Error;

use crate::mounts::{self, MountError};

/// Parent of every sandbox's state directory.
pub const STATE_ROOT: &str = "/run/rust-vm/containerd";

#[derive(Debug, Error)]
pub enum PodSandboxError {
    #[error("rust-vm config: {0}")]
    Config(String),
    #[error("start sandbox {id}: {source}")]
    Start {
        id: String,
        #[source]
        source: SandboxError,
    },
    #[error("sandbox {0}: its owner thread is gone")]
    OwnerGone(String),
    #[error("sandbox {id}: {source}")]
    Sandbox {
        id: String,
        #[source]
        source: SandboxError,
    },
    #[error("connect to the agent of sandbox {id}: {source}")]
    Connect {
        id: String,
        #[source]
        source: rust_vm_protocol::ClientError,
    },
    #[error("cannot start the sandbox owner thread: {0}")]
    Thread(#[source] io::Error),
    #[error("{0}")]
    Mount(#[from] MountError),
    #[error("enter the mount namespace of sandbox {id} ({path}): {source}")]
    EnterMountNamespace {
        id: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

enum Command {
    Rootfs(PathBuf, Sender<Result<RootfsSource, SandboxError>>),
    ReleaseRootfs(PathBuf, Sender<Result<(), SandboxError>>),
    Shutdown(Sender<Result<(), SandboxError>>),
}

/// What the service keeps of a running sandbox.
pub struct PodSandbox {
    id: String,
    backend: Backend,
    /// Host pid of the VMM (`vm`) or agent (`namespaces`).
    pid: u32,
    client: Client,
    commands: Sender<Command>,
}

/// The state directory of a pod's sandbox. Short and fixed-length, because it holds Unix
/// sockets, and derived from namespace and sandbox id, so `delete` finds it without the daemon.
pub fn state_dir(namespace: &str, sandbox_id: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(short_hash(&format!("{namespace}/{sandbox_id}")))
}

/// Removes what a dead shim left of its sandbox. The sandbox processes are gone already
/// (parent-death signal); their files are not.
pub fn remove_state(namespace: &str, sandbox_id: &str) -> io::Result<()> {
    match fs::remove_dir_all(state_dir(namespace, sandbox_id)) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// FNV-1a, 64 bits, as 16 hex digits: stable across builds (unlike std's hasher), and
/// collisions only matter within one host's live pods.
fn short_hash(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

impl PodSandbox {
    /// Starts the sandbox of pod `id` with the first container's rootfs directory. A `pod`
    /// (CRI sandbox) gets `pod_disk_slots` spare disks for the containers that join it later.
    pub fn start(
        namespace: &str,
        id: &str,
        config_path: &Path,
        first_rootfs: &Path,
        pod: bool,
    ) -> Result<PodSandbox, PodSandboxError> {
        let must_exist = config_path != Path::new(crate::config::DEFAULT_CONFIG_PATH);
        let runtime = RuntimeConfig::load(config_path, must_exist)
            .map_err(|e| PodSandboxError::Config(e.to_string()))?;
        let dir = state_dir(namespace, id);
        // A previous shim of this pod died without `delete` running: its files are stale.
        if let Err(err) = remove_state(namespace, id) {
            log::warn!("remove stale {}: {err}", dir.display());
        }
        let mut cfg = runtime.sandbox_config(id, &dir);
        cfg.rootfs = Some(first_rootfs.to_owned());
        if pod {
            cfg.disk_slots = runtime.pod_disk_slots;
        }
        let backend = cfg.backend;

        let (ready_tx, ready_rx) = mpsc::channel();
        let (commands, command_rx) = mpsc::channel::<Command>();
        let owner_id = id.to_owned();
        thread::Builder::new()
            .name(format!("sandbox-{id}"))
            .spawn(move || {
                let sandbox = match Sandbox::start(cfg) {
                    Ok(sandbox) => sandbox,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok((sandbox.agent_address().clone(), sandbox.pid())));
                for command in command_rx {
                    match command {
                        Command::Rootfs(dir, reply) => {
                            let _ = reply.send(sandbox.rootfs_source(&dir));
                        }
                        Command::ReleaseRootfs(dir, reply) => {
                            let _ = reply.send(sandbox.release_rootfs(&dir));
                        }
                        Command::Shutdown(reply) => {
                            let _ = reply.send(sandbox.shutdown());
                            return;
                        }
                    }
                }
                // The service dropped us without a shutdown: dropping kills the sandbox.
                log::warn!("sandbox {owner_id}: dropped without shutdown, killing it");
            })
            .map_err(PodSandboxError::Thread)?;

        let (address, pid): (Address, u32) = ready_rx
            .recv()
            .map_err(|_| PodSandboxError::OwnerGone(id.to_owned()))?
            .map_err(|source| PodSandboxError::Start {
                id: id.to_owned(),
                source,
            })?;
        let client =
            Client::connect_address(address).map_err(|source| PodSandboxError::Connect {
                id: id.to_owned(),
                source,
            })?;
        log::info!("sandbox {id}: {backend} back-end up, pid {pid}");
        Ok(PodSandbox {
            id: id.to_owned(),
            backend,
            pid,
            client,
            commands,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The shim's control connection to the agent (usable from many threads at once).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Where the agent finds the container whose rootfs is mounted at `dir`.
    pub fn rootfs_source(&self, dir: &Path) -> Result<RootfsSource, PodSandboxError> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(Command::Rootfs(dir.to_owned(), tx))
            .map_err(|_| PodSandboxError::OwnerGone(self.id.clone()))?;
        rx.recv()
            .map_err(|_| PodSandboxError::OwnerGone(self.id.clone()))?
            .map_err(|source| PodSandboxError::Sandbox {
                id: self.id.clone(),
                source,
            })
    }

    /// Frees what [`PodSandbox::rootfs_source`] took for `dir` (a pod disk slot), once the agent
    /// has removed the container.
    pub fn release_rootfs(&self, dir: &Path) -> Result<(), PodSandboxError> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(Command::ReleaseRootfs(dir.to_owned(), tx))
            .map_err(|_| PodSandboxError::OwnerGone(self.id.clone()))?;
        rx.recv()
            .map_err(|_| PodSandboxError::OwnerGone(self.id.clone()))?
            .map_err(|source| PodSandboxError::Sandbox {
                id: self.id.clone(),
                source,
            })
    }

    /// Mounts a container's rootfs where the agent sees it. The `namespaces` agent lives in a
    /// mount namespace of its own, with private propagation: a mount made on the host after the
    /// sandbox started would stay invisible to it, so the mount is made inside that namespace.
    pub fn mount_rootfs(&self, rootfs: &[Mount], target: &Path) -> Result<(), PodSandboxError> {
        match self.backend {
            Backend::Namespaces => {
                let rootfs = rootfs.to_vec();
                let target = target.to_owned();
                self.in_mount_namespace(move || mounts::mount_rootfs(&rootfs, &target))
            }
            Backend::Vm => Ok(mounts::mount_rootfs(rootfs, target)?),
        }
    }

    /// Undoes [`PodSandbox::mount_rootfs`].
    pub fn unmount_rootfs(&self, target: &Path) -> Result<(), PodSandboxError> {
        match self.backend {
            Backend::Namespaces => {
                let target = target.to_owned();
                self.in_mount_namespace(move || mounts::unmount_rootfs(&target))
            }
            Backend::Vm => Ok(mounts::unmount_rootfs(target)?),
        }
    }

    /// Runs `f` on a fresh thread that has joined the agent's mount namespace. The thread first
    /// stops sharing filesystem attributes with the rest of the process (`unshare(CLONE_FS)`),
    /// which `setns` requires in a multi-threaded process; only that thread changes namespace.
    fn in_mount_namespace<F>(&self, f: F) -> Result<(), PodSandboxError>
    where
        F: FnOnce() -> Result<(), MountError> + Send + 'static,
    {
        let path = PathBuf::from(format!("/proc/{}/ns/mnt", self.pid));
        let id = self.id.clone();
        let enter_error = |source: io::Error| PodSandboxError::EnterMountNamespace {
            id: id.clone(),
            path: path.clone(),
            source,
        };
        let ns = fs::File::open(&path).map_err(enter_error)?;
        let joined = thread::Builder::new()
            .name("mount-ns".into())
            .spawn(move || -> Result<Result<(), MountError>, io::Error> {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).map_err(io::Error::from)?;
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS)
                    .map_err(io::Error::from)?;
                Ok(f())
            })
            .map_err(PodSandboxError::Thread)?
            .join()
            .map_err(|_| enter_error(io::Error::other("mount thread panicked")))?;
        Ok(joined.map_err(enter_error)??)
    }

    /// Asks the agent to stop, then removes the sandbox's files.
    pub fn shutdown(&self) -> Result<(), PodSandboxError> {
        let (tx, rx) = mpsc::channel();
        if self.commands.send(Command::Shutdown(tx)).is_err() {
            return Ok(()); // already shut down
        }
        match rx.recv() {
            Ok(result) => result.map_err(|source| PodSandboxError::Sandbox {
                id: self.id.clone(),
                source,
            }),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dirs_are_short_stable_and_distinct() {
        let a = state_dir("k8s.io", &"a".repeat(64));
        let b = state_dir("default", &"a".repeat(64));
        assert_ne!(a, b);
        assert_eq!(a, state_dir("k8s.io", &"a".repeat(64)));
        // Room for `agent.sock` / `vsock.sock_1024` under the 107-byte socket limit.
        assert!(a.as_os_str().len() < 50, "{}", a.display());
        assert_eq!(short_hash(""), "cbf29ce484222325");
    }

    #[test]
    fn removing_missing_state_is_fine() {
        remove_state("no-such-namespace", "no-such-sandbox").unwrap();
    }
}
