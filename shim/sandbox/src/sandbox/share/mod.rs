//! A pod's share: the host files its guest reaches through virtio-fs, served by one virtiofsd.
//!
//! Layout in the sandbox's state directory (docs/virtio-fs.md):
//!
//! * `share/staging/` — where the host binds, at container create, the container's rootfs as
//!   `<id>/rootfs` and each bind-mount source of its spec as `<id>/mounts/<index>`;
//! * `share/export/` — a read-only bind of `staging` that receives its later mounts (slave
//!   propagation): what virtiofsd serves, so the guest cannot create anything at the top, only
//!   inside a rootfs or a writable volume;
//! * `virtiofsd.sock`, `virtiofsd.log`.
//!
//! Every mount lives in a **private mount namespace** held by the share's own thread (and by
//! virtiofsd, its child): the host's namespace never sees them, and when the process dies, even
//! by SIGKILL, the thread and virtiofsd (parent-death signal) die and the kernel drops every
//! mount with the namespace (virtiofsd runs under an init of a PID namespace of our own, so none
//! of its processes outlives us either). The copies are made with `open_tree` on the calling
//! thread, where the host's mounts (containerd's snapshot) are seen, and attached on the share's
//! thread.
//! virtiofsd runs its own sandbox (`--sandbox namespace`: pivot_root into the export, no
//! network), so no path the guest names resolves outside the export.

mod binds;
mod mount_api;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

pub use binds::{guest_rootfs, guest_source, is_bind, plan, HostBind};

use super::process;
use crate::settings::{LogLevel, VirtiofsCache};

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("cannot start the share thread")]
    Thread(#[source] io::Error),
    #[error("the share thread is gone")]
    ThreadGone,
    #[error("cannot make the share's mount namespace")]
    Namespace(#[source] nix::Error),
    #[error("{what} {}", path.display())]
    Mount {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot start virtiofsd {}", path.display())]
    Spawn { path: PathBuf, source: io::Error },
    #[error("mounts[{index}] ({}): source {}", destination.display(), source_path.display())]
    Source {
        index: usize,
        destination: PathBuf,
        source_path: PathBuf,
        source: io::Error,
    },
    #[error("rootfs {}", path.display())]
    Rootfs { path: PathBuf, source: io::Error },
    #[error("container {0} is already in the share")]
    AlreadyShared(String),
    #[error("container {id}: {} mount(s) of the share could not be removed (first: {})", count, first.display())]
    Busy {
        id: String,
        count: usize,
        first: PathBuf,
        source: io::Error,
    },
}

/// How virtiofsd serves the share.
#[derive(Debug, Clone)]
pub struct ShareOptions {
    pub virtiofsd: PathBuf,
    pub cache: VirtiofsCache,
    /// virtiofsd's `--thread-pool-size` (0: requests are served on the queue's thread).
    pub thread_pool_size: usize,
    pub log_level: LogLevel,
    /// The sandbox's host cgroup (`cgroup.procs` files) for virtiofsd to join; none: stay.
    pub cgroup_procs: Vec<std::ffi::CString>,
}

/// The files of a share in the sandbox's state directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub staging: PathBuf,
    pub export: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Layout {
    /// The share under `state_dir`, its socket in `socket_dir` (where the VMM can reach it).
    pub fn new(state_dir: &Path, socket_dir: &Path) -> Layout {
        let share = state_dir.join("share");
        Layout {
            staging: share.join("staging"),
            export: share.join("export"),
            socket: socket_dir.join("virtiofsd.sock"),
            log: state_dir.join("virtiofsd.log"),
        }
    }

    fn share_dir(&self) -> &Path {
        self.staging.parent().unwrap_or(&self.staging)
    }
}

/// A detached copy of a host tree and the name of its place under `staging/<id>/`.
struct Entry {
    name: PathBuf,
    tree: OwnedFd,
    is_dir: bool,
}

enum Request {
    Add {
        id: String,
        entries: Vec<Entry>,
        reply: Sender<Result<(), ShareError>>,
    },
    Remove {
        id: String,
        reply: Sender<Result<(), ShareError>>,
    },
}

/// A running share: its thread (in the private mount namespace) and virtiofsd.
pub struct Share {
    id: String,
    layout: Layout,
    requests: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    virtiofsd: Option<Child>,
}

impl Share {
    /// Makes the layout, the private namespace and starts virtiofsd listening on
    /// [`Layout::socket`] (the VMM connects to it). The directories of the state and the
    /// socket must exist.
    pub fn start(id: &str, layout: Layout, options: &ShareOptions) -> Result<Share, ShareError> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (requests, request_rx) = mpsc::channel();
        let thread_layout = layout.clone();
        let options = options.clone();
        let thread = thread::Builder::new()
            .name(format!("share-{id}"))
            .spawn(move || {
                // virtiofsd dies with this thread (parent-death signal): it serves until the
                // share is shut down.
                match enter_namespace(&thread_layout)
                    .and_then(|()| spawn_virtiofsd(&thread_layout, &options))
                {
                    Ok(child) => {
                        let _ = ready_tx.send(Ok(child));
                        serve(&thread_layout, request_rx);
                    }
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                    }
                }
            })
            .map_err(ShareError::Thread)?;
        let mut share = Share {
            id: id.to_string(),
            layout,
            requests: Some(requests),
            thread: Some(thread),
            virtiofsd: None,
        };
        let child = ready_rx.recv().map_err(|_| ShareError::ThreadGone)??;
        log::info!(
            "sandbox {id}: virtiofsd (under pid {}) serves {} on {}",
            child.id(),
            share.layout.export.display(),
            share.layout.socket.display()
        );
        share.virtiofsd = Some(child);
        Ok(share)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The pid of virtiofsd's waiter (our child, which exits as virtiofsd does; see
    /// `process::spawn_in_pid_namespace`), while it runs.
    pub fn virtiofsd_pid(&self) -> Option<u32> {
        self.virtiofsd.as_ref().map(Child::id)
    }

    /// `Some(status)` once virtiofsd has exited.
    pub fn virtiofsd_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.virtiofsd
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Puts container `id`'s rootfs (when given) and the sources of `binds` into the share.
    /// Called where the host's mounts are seen; read-only binds are read-only on the host side
    /// too. On failure nothing of the container is left in the share.
    pub fn add_container(
        &self,
        id: &str,
        rootfs: Option<&Path>,
        binds: &[HostBind],
    ) -> Result<(), ShareError> {
        let mut entries = Vec::with_capacity(binds.len() + 1);
        if let Some(path) = rootfs {
            let rootfs_error = |source| ShareError::Rootfs {
                path: path.to_path_buf(),
                source,
            };
            if !fs::metadata(path).map_err(rootfs_error)?.is_dir() {
                return Err(rootfs_error(io::Error::from_raw_os_error(libc::ENOTDIR)));
            }
            entries.push(Entry {
                name: PathBuf::from("rootfs"),
                tree: mount_api::clone_tree(path, true).map_err(rootfs_error)?,
                is_dir: true,
            });
        }
        for bind in binds {
            let source_error = |source| ShareError::Source {
                index: bind.index,
                destination: bind.destination.clone(),
                source_path: bind.source.clone(),
                source,
            };
            let is_dir = fs::metadata(&bind.source).map_err(source_error)?.is_dir();
            let tree = mount_api::clone_tree(&bind.source, bind.recursive).map_err(source_error)?;
            if bind.read_only {
                mount_api::set_read_only(&tree, bind.recursive).map_err(source_error)?;
            }
            entries.push(Entry {
                name: Path::new("mounts").join(bind.entry_name()),
                tree,
                is_dir,
            });
        }
        self.ask(|reply| Request::Add {
            id: id.to_string(),
            entries,
            reply,
        })
    }

    /// Takes container `id` out of the share (nothing to do for one it does not hold).
    pub fn remove_container(&self, id: &str) -> Result<(), ShareError> {
        self.ask(|reply| Request::Remove {
            id: id.to_string(),
            reply,
        })
    }

    fn ask(
        &self,
        request: impl FnOnce(Sender<Result<(), ShareError>>) -> Request,
    ) -> Result<(), ShareError> {
        let (tx, rx) = mpsc::channel();
        self.requests
            .as_ref()
            .ok_or(ShareError::ThreadGone)?
            .send(request(tx))
            .map_err(|_| ShareError::ThreadGone)?;
        rx.recv().map_err(|_| ShareError::ThreadGone)?
    }

    /// Stops virtiofsd and the share's thread; the kernel drops the namespace and its mounts.
    /// A second call does nothing.
    pub fn shutdown(&mut self) {
        if let Some(mut child) = self.virtiofsd.take() {
            process::kill_and_reap(&mut child);
        }
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::warn!("sandbox {}: the share thread panicked", self.id);
            }
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn mount_error(what: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> ShareError {
    let path = path.to_path_buf();
    move |e| ShareError::Mount {
        what,
        path,
        source: io::Error::from(e),
    }
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ShareError {
    let path = path.to_path_buf();
    move |source| ShareError::Mount { what, path, source }
}

/// On the share's thread: a private mount namespace (no mount goes back to the host's), the
/// staging side shared so that what is bound there later reaches the export and virtiofsd's
/// copy of it, the export read-only.
fn enter_namespace(layout: &Layout) -> Result<(), ShareError> {
    unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS).map_err(ShareError::Namespace)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(ShareError::Namespace)?;
    for dir in [layout.share_dir(), &layout.staging, &layout.export] {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(dir)
            .map_err(io_error("creating", dir))?;
    }
    let none = None::<&str>;
    let (staging, export) = (&layout.staging, &layout.export);
    mount(Some(staging), staging, none, MsFlags::MS_BIND, none).map_err(mount_error(
        "binding the share's staging directory",
        staging,
    ))?;
    mount(none, staging, none, MsFlags::MS_SHARED, none)
        .map_err(mount_error("making shared", staging))?;
    mount(Some(staging), export, none, MsFlags::MS_BIND, none)
        .map_err(mount_error("binding the share's export directory", export))?;
    mount(none, export, none, MsFlags::MS_SLAVE, none)
        .map_err(mount_error("making a slave", export))?;
    // Shared as well, so that virtiofsd's namespace (a slave copy) receives it all too.
    mount(none, export, none, MsFlags::MS_SHARED, none)
        .map_err(mount_error("making shared", export))?;
    let read_only = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    mount(none, export, none, read_only, none).map_err(mount_error("making read-only", export))?;
    Ok(())
}

/// virtiofsd's command line: it gets its listening socket as fd 3 (so the socket exists before
/// the VMM connects), serves the export with its own namespace sandbox and tells the guest where
/// submounts are (each container's rootfs and volumes are one).
fn virtiofsd_command(layout: &Layout, options: &ShareOptions) -> Command {
    let mut cmd = Command::new(&options.virtiofsd);
    cmd.arg("--fd=3")
        .arg(format!("--shared-dir={}", layout.export.display()))
        .arg(format!("--cache={}", options.cache.as_str()))
        .arg("--sandbox=namespace")
        .arg("--announce-submounts")
        .arg("--xattr")
        .arg(format!("--thread-pool-size={}", options.thread_pool_size))
        .arg(format!("--log-level={}", options.log_level.name()));
    cmd
}

fn spawn_virtiofsd(layout: &Layout, options: &ShareOptions) -> Result<Child, ShareError> {
    let listener =
        UnixListener::bind(&layout.socket).map_err(io_error("listening on", &layout.socket))?;
    let (out, err) = process::log_stdio(&layout.log).map_err(io_error("creating", &layout.log))?;
    let mut cmd = virtiofsd_command(layout, options);
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    process::pass_fds(&mut cmd, vec![(listener.as_raw_fd(), 3)]);
    process::join_cgroup(&mut cmd, options.cgroup_procs.clone());
    // Under an init of our own: virtiofsd's sandboxed child is the init of a PID namespace of its
    // own and outlives a parent-death signal while it waits for a VMM; ours takes it along.
    let child = process::spawn_in_pid_namespace(cmd).map_err(|source| ShareError::Spawn {
        path: options.virtiofsd.clone(),
        source,
    })?;
    // virtiofsd holds the socket now; ours closes here.
    drop(listener);
    Ok(child)
}

/// The share's thread after set-up: serves requests until every sender is gone.
fn serve(layout: &Layout, requests: Receiver<Request>) {
    let mut containers: HashMap<String, Vec<PathBuf>> = HashMap::new();
    for request in requests {
        match request {
            Request::Add { id, entries, reply } => {
                let result = add(layout, &mut containers, &id, entries);
                let _ = reply.send(result);
            }
            Request::Remove { id, reply } => {
                let result = remove(layout, &mut containers, &id);
                let _ = reply.send(result);
            }
        }
    }
}

fn add(
    layout: &Layout,
    containers: &mut HashMap<String, Vec<PathBuf>>,
    id: &str,
    entries: Vec<Entry>,
) -> Result<(), ShareError> {
    if containers.contains_key(id) {
        return Err(ShareError::AlreadyShared(id.to_string()));
    }
    let dir = layout.staging.join(id);
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&dir)
        .map_err(io_error("creating", &dir))?;
    let mut attached = Vec::with_capacity(entries.len());
    for entry in entries {
        let target = dir.join(&entry.name);
        if let Err(err) = attach_entry(&entry, &target) {
            let busy = detach_all(&dir, &attached);
            if !busy.is_empty() {
                log::warn!(
                    "share: undoing {id}: {}",
                    crate::Chain(&busy_error(id, busy))
                );
            }
            return Err(err);
        }
        attached.push(target);
    }
    containers.insert(id.to_string(), attached);
    Ok(())
}

fn attach_entry(entry: &Entry, target: &Path) -> Result<(), ShareError> {
    if let Some(parent) = target.parent() {
        fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(parent)
            .map_err(io_error("creating", parent))?;
    }
    if entry.is_dir {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(target)
            .map_err(io_error("creating", target))?;
    } else {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(target)
            .map_err(io_error("creating", target))?;
    }
    if let Err(source) = mount_api::attach(&entry.tree, target) {
        remove_target(target);
        return Err(ShareError::Mount {
            what: "attaching into the share",
            path: target.to_path_buf(),
            source,
        });
    }
    Ok(())
}

fn remove(
    layout: &Layout,
    containers: &mut HashMap<String, Vec<PathBuf>>,
    id: &str,
) -> Result<(), ShareError> {
    let Some(targets) = containers.remove(id) else {
        return Ok(());
    };
    let busy = detach_all(&layout.staging.join(id), &targets);
    if busy.is_empty() {
        return Ok(());
    }
    // What is still mounted stays known, so a later remove can try again.
    containers.insert(
        id.to_string(),
        busy.iter().map(|(t, _)| t.clone()).collect(),
    );
    Err(busy_error(id, busy))
}

/// Detaches `targets` (last first) and removes their mount points, then `dir` once all are
/// gone; never recursively: a mount point that is still a mount keeps its files. Returns the
/// targets still mounted (in attach order) and why.
fn detach_all(dir: &Path, targets: &[PathBuf]) -> Vec<(PathBuf, io::Error)> {
    let mut busy = Vec::new();
    for target in targets.iter().rev() {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => remove_target(target),
            Err(e) => busy.push((target.clone(), io::Error::from(e))),
        }
    }
    if busy.is_empty() {
        let _ = fs::remove_dir(dir.join("mounts"));
        let _ = fs::remove_dir(dir);
    }
    busy.reverse();
    busy
}

/// The error for container `id`'s mounts that `detach_all` could not remove (`busy` not empty).
fn busy_error(id: &str, mut busy: Vec<(PathBuf, io::Error)>) -> ShareError {
    let count = busy.len();
    let (first, source) = busy.swap_remove(0);
    ShareError::Busy {
        id: id.to_string(),
        count,
        first,
        source,
    }
}

/// Removes an (unmounted) mount point: an empty directory or an empty file.
fn remove_target(target: &Path) {
    let _ = fs::remove_dir(target).or_else(|_| fs::remove_file(target));
}

#[cfg(test)]
mod tests;
