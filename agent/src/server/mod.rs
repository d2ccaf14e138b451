//! The agent's protocol server: one thread per connection, requests on a connection handled in
//! order except those that wait for something outside the agent (`wait`, `write_stdin`, forced
//! `remove_container`), which run on their own threads so that later requests are answered
//! meanwhile. Stdio travels on separate connections (see `docs/protocol.md`), so no control reply
//! ever waits for a client to read output.

mod forward;
mod handlers;
mod process;
pub mod runtime;
pub mod stdio;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread;

use rust_vm_protocol::{
    read_frame, write_frame, AgentMode, Attach, ErrorCode, FrameError, Operation, ProtocolError,
    Request, Response, StreamKind, PROTOCOL_VERSION,
};
use serde::Serialize;
use serde_json::Value;

use crate::listener::{Conn, Listener};
use crate::reaper::{ExitCell, Reaper};
use process::ContainerEntry;
use runtime::Runtime;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Registry {
    containers: HashMap<String, Arc<ContainerEntry>>,
    /// Ids whose creation is in progress.
    creating: HashSet<String>,
}

/// How long a connection that sent an oversized frame is drained before it is closed.
const FRAME_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What to do after `shutdown` has been answered (power off, or exit in host mode).
pub type ShutdownHook = Box<dyn Fn() + Send + Sync>;

pub struct Server {
    runtime: Box<dyn Runtime>,
    reaper: Reaper,
    mode: AgentMode,
    registry: Mutex<Registry>,
    on_shutdown: ShutdownHook,
    /// Requests waiting on a process (`wait`, a blocked `write_stdin`), for tests and the
    /// shutdown log.
    requests_waiting: AtomicUsize,
}

type Reply = Result<Value, ProtocolError>;

/// A connection's client is gone: the `wait`s it asked for stop waiting (their threads end)
/// instead of lasting until their process exits, which may be never.
#[derive(Default)]
struct Hangup {
    gone: AtomicBool,
    waiting: Mutex<Vec<Weak<ExitCell>>>,
}

impl Hangup {
    /// One entry per live cell, however many waits a long-lived connection sends.
    fn watch(&self, cell: &Arc<ExitCell>) {
        let mut waiting = lock(&self.waiting);
        waiting.retain(|w| w.strong_count() > 0);
        if !waiting
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(cell)))
        {
            waiting.push(Arc::downgrade(cell));
        }
    }

    fn wait(&self, cell: &Arc<ExitCell>) -> Option<rust_vm_protocol::ExitStatus> {
        self.watch(cell);
        cell.wait_unless(&self.gone)
    }

    fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    /// Set before the wake-ups: a wait registered after them sees the flag.
    fn hang_up(&self) {
        self.gone.store(true, Ordering::SeqCst);
        for cell in lock(&self.waiting).drain(..) {
            if let Some(cell) = cell.upgrade() {
                cell.wake();
            }
        }
    }
}

/// Hangs up when the connection's reader returns, whichever way.
struct HangUpOnDrop(Arc<Hangup>);

impl Drop for HangUpOnDrop {
    fn drop(&mut self) {
        self.0.hang_up();
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn to_reply(result: Result<impl Serialize, ProtocolError>) -> Reply {
    result.and_then(|value| {
        serde_json::to_value(value)
            .map_err(|e| ProtocolError::new(ErrorCode::Internal, format!("encoding result: {e}")))
    })
}

/// The write half of a control connection, shared by the threads answering its requests.
#[derive(Clone)]
struct Replier {
    conn: Arc<Mutex<Conn>>,
}

impl Replier {
    fn send(&self, response: Response) {
        let body = match response.encode() {
            Ok(body) => body,
            Err(e) => {
                log::error!("cannot encode a response: {e}");
                return;
            }
        };
        let mut conn = lock(&self.conn);
        if let Err(e) = write_frame(&mut *conn, &body) {
            log::debug!("client went away before its response: {e}");
        }
    }

    fn reply(&self, id: u64, reply: Reply) {
        let response = match reply {
            Ok(value) => Response {
                v: PROTOCOL_VERSION,
                id: Some(id),
                ok: Some(value),
                error: None,
            },
            Err(error) => Response::error(Some(id), error),
        };
        self.send(response);
    }
}

impl Server {
    pub fn new(
        runtime: Box<dyn Runtime>,
        reaper: Reaper,
        mode: AgentMode,
        on_shutdown: ShutdownHook,
    ) -> Arc<Server> {
        Arc::new(Server {
            runtime,
            reaper,
            mode,
            registry: Mutex::new(Registry::default()),
            on_shutdown,
            requests_waiting: AtomicUsize::new(0),
        })
    }

    /// Accepts connections forever.
    pub fn serve(self: &Arc<Self>, listener: Listener) -> std::io::Result<()> {
        loop {
            let conn = match listener.accept() {
                Ok(conn) => conn,
                // The listener itself is broken: nothing to retry.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP)
                    ) =>
                {
                    return Err(e)
                }
                // Out of fds or memory, or a connection gone before it was accepted: the
                // agent must outlive that.
                Err(e) => {
                    log::error!("accept: {e}; retrying");
                    thread::sleep(std::time::Duration::from_millis(100));
                    continue;
                }
            };
            let server = Arc::clone(self);
            let spawned = thread::Builder::new()
                .name("conn".into())
                .spawn(move || server.serve_connection(conn));
            if let Err(e) = spawned {
                log::error!("cannot start a connection thread: {e}");
            }
        }
    }

    fn serve_connection(self: Arc<Self>, conn: Conn) {
        let mut reader = match conn.try_clone() {
            Ok(reader) => reader,
            Err(e) => {
                log::error!("cannot duplicate a connection: {e}");
                return;
            }
        };
        let replier = Replier {
            conn: Arc::new(Mutex::new(conn)),
        };
        let hangup = HangUpOnDrop(Arc::default());
        let mut first = true;
        loop {
            let body = match read_frame(&mut reader) {
                Ok(Some(body)) => body,
                Ok(None) => return,
                Err(FrameError::TooLarge { len, max }) => {
                    replier.send(Response::error(
                        None,
                        ProtocolError::new(
                            ErrorCode::FrameTooLarge,
                            format!("frame of {len} bytes exceeds the limit of {max} bytes; closing the connection"),
                        ),
                    ));
                    drop(replier);
                    reader.close_after_reply(max, FRAME_DRAIN_TIMEOUT);
                    return;
                }
                Err(e) => {
                    log::debug!("closing a connection: {e}");
                    return;
                }
            };
            let request = match Request::decode(&body) {
                Ok(request) => request,
                Err(e) => {
                    log::debug!("bad request: {}", e.error);
                    replier.send(Response::error(e.id, e.error));
                    first = false;
                    continue;
                }
            };
            let id = request.id;
            log::debug!("request {id}: {}", request.op.name());
            match request.op {
                Operation::Attach(attach) if first => {
                    drop(replier.conn);
                    self.serve_stream(reader, id, attach);
                    return;
                }
                Operation::Attach(_) => replier.reply(
                    id,
                    Err(ProtocolError::new(
                        ErrorCode::FailedPrecondition,
                        "`attach` must be the first request on a new connection",
                    )),
                ),
                Operation::PortForward(req) if first => {
                    match forward::connect(&req) {
                        Ok(tcp) => {
                            replier.reply(id, Ok(Value::Object(Default::default())));
                            drop(replier.conn);
                            forward::relay(reader, tcp);
                        }
                        Err(e) => replier.reply(id, Err(e)),
                    }
                    return;
                }
                Operation::PortForward(_) => replier.reply(
                    id,
                    Err(ProtocolError::new(
                        ErrorCode::FailedPrecondition,
                        "`port_forward` must be the first request on a new connection",
                    )),
                ),
                Operation::Shutdown(_) => {
                    // The reply means nothing is left to lose: the host may stop the VM
                    // at once instead of waiting for the guest's own power-off.
                    self.remove_all();
                    replier.reply(id, Ok(Value::Object(Default::default())));
                    (self.on_shutdown)();
                }
                Operation::Wait(req) => {
                    let server = Arc::clone(&self);
                    let replier = replier.clone();
                    let hangup = Arc::clone(&hangup.0);
                    let spawned = thread::Builder::new().name("wait".into()).spawn(move || {
                        match server.wait(&req, &hangup) {
                            Ok(Some(status)) => replier.reply(id, to_reply(Ok(status))),
                            Ok(None) => log::debug!(
                                "request {id}: wait for {}: the client went away",
                                req.container_id
                            ),
                            Err(e) => replier.reply(id, Err(e)),
                        }
                    });
                    if let Err(e) = spawned {
                        log::error!("cannot start a wait thread: {e}");
                    }
                }
                Operation::WriteStdin(req) => {
                    let server = Arc::clone(&self);
                    let replier = replier.clone();
                    let hangup = Arc::clone(&hangup.0);
                    let spawned =
                        thread::Builder::new()
                            .name("write_stdin".into())
                            .spawn(move || {
                                let reply = to_reply(server.write_stdin(&req, &hangup));
                                if !hangup.is_gone() {
                                    replier.reply(id, reply);
                                }
                            });
                    if let Err(e) = spawned {
                        log::error!("cannot start a write_stdin thread: {e}");
                    }
                }
                op @ Operation::RemoveContainer(_) => {
                    let server = Arc::clone(&self);
                    let replier = replier.clone();
                    let spawned = thread::Builder::new()
                        .name("request".into())
                        .spawn(move || replier.reply(id, server.handle(op)));
                    if let Err(e) = spawned {
                        log::error!("cannot start a request thread: {e}");
                    }
                }
                op => replier.reply(id, self.handle(op)),
            }
            first = false;
        }
    }

    fn handle(&self, op: Operation) -> Reply {
        match op {
            Operation::Version(_) => to_reply(Ok(self.version())),
            Operation::Ping(_) => to_reply(Ok(rust_vm_protocol::Empty {})),
            Operation::CreateContainer(req) => to_reply(self.create(req)),
            Operation::Start(req) => to_reply(self.start(&req.container_id)),
            Operation::Exec(req) => to_reply(self.exec(req)),
            Operation::Signal(req) => to_reply(self.signal(&req)),
            Operation::CloseStdin(req) => to_reply(self.close_stdin(&req)),
            Operation::ResizeTty(req) => to_reply(self.resize_tty(&req)),
            Operation::ListProcesses(req) => to_reply(self.list_processes(&req.container_id)),
            Operation::Stats(req) => to_reply(self.stats(&req.container_id)),
            Operation::UpdateResources(req) => to_reply(self.update_resources(&req)),
            Operation::State(req) => to_reply(self.state(&req.container_id)),
            Operation::RemoveContainer(req) => to_reply(self.remove(&req)),
            Operation::RemoveExec(req) => to_reply(self.remove_exec(&req)),
            Operation::ConfigureNetwork(config) => to_reply(self.configure_network(&config)),
            Operation::Wait(_)
            | Operation::WriteStdin(_)
            | Operation::Shutdown(_)
            | Operation::Attach(_)
            | Operation::PortForward(_) => Err(ProtocolError::new(
                ErrorCode::Internal,
                "operation dispatched to the wrong handler",
            )),
        }
    }

    /// Serves a stdio connection after its `attach` request.
    fn serve_stream(&self, mut conn: Conn, id: u64, attach: Attach) {
        let replier = match conn.try_clone() {
            Ok(writer) => Replier {
                conn: Arc::new(Mutex::new(writer)),
            },
            Err(e) => {
                log::error!("cannot duplicate a connection: {e}");
                return;
            }
        };
        let process = match self.process(&attach.container_id, attach.exec_id.as_deref()) {
            Ok(process) => process,
            Err(e) => return replier.reply(id, Err(e)),
        };
        let ok = || Ok(Value::Object(Default::default()));
        let label = process.label.clone();
        match attach.stream {
            StreamKind::Stdout | StreamKind::Stderr => {
                let output = match (attach.stream, &process.stdio.stderr) {
                    (StreamKind::Stderr, Some(stderr)) => stderr,
                    (StreamKind::Stderr, None) => {
                        return replier.reply(
                            id,
                            Err(ProtocolError::new(
                                ErrorCode::InvalidArgument,
                                format!("{label} has a terminal: all its output is on stdout"),
                            )),
                        )
                    }
                    _ => &process.stdio.stdout,
                };
                let attachment = match output.attach() {
                    Ok(attachment) => attachment,
                    Err(e) => return replier.reply(id, Err(e)),
                };
                let watch = match conn.try_clone() {
                    Ok(watch) => watch,
                    Err(e) => {
                        return replier
                            .reply(id, Err(handlers::internal("duplicating a connection", e)))
                    }
                };
                replier.reply(id, ok());
                if let Err(e) = attachment.deliver(&mut conn, watch.hangup_probe()) {
                    log::debug!("{label}: {} client went away: {e}", attach.stream);
                }
                conn.shutdown_write();
            }
            StreamKind::Stdin => {
                let _claim = match process.stdin_attached.claim() {
                    Ok(claim) => claim,
                    Err(e) => return replier.reply(id, Err(e)),
                };
                if matches!(process.stdio.stdin, stdio::Stdin::None) {
                    return replier.reply(
                        id,
                        Err(ProtocolError::new(
                            ErrorCode::FailedPrecondition,
                            format!("{label} was created without stdin"),
                        )),
                    );
                }
                let watch = match conn.try_clone() {
                    Ok(watch) => watch,
                    Err(e) => {
                        return replier
                            .reply(id, Err(handlers::internal("duplicating a connection", e)))
                    }
                };
                let gone = watch.hangup_probe();
                replier.reply(id, ok());
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    match conn.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => {
                            if let Err(e) = process.stdio.stdin.write(&chunk[..n], &gone) {
                                log::debug!("{label}: stdin: {e}");
                                break;
                            }
                        }
                        Err(e) => {
                            log::debug!("{label}: stdin client: {e}");
                            break;
                        }
                    }
                }
                if let Err(e) = process.stdio.stdin.close() {
                    log::debug!("{label}: closing stdin: {e}");
                }
                conn.shutdown_both();
            }
        }
    }

    pub fn requests_waiting(&self) -> usize {
        self.requests_waiting.load(Ordering::SeqCst)
    }

    /// Counts a request waiting on a process until the returned guard drops.
    fn waiting_started(&self) -> Waiting<'_> {
        self.requests_waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(&self.requests_waiting)
    }

    fn version(&self) -> rust_vm_protocol::VersionInfo {
        rust_vm_protocol::VersionInfo {
            protocol: rust_vm_protocol::PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            mode: self.mode,
            cgroups: self.runtime.cgroups_enabled(),
        }
    }

    /// Removes every container, then runs the shutdown hook.
    pub fn shutdown(&self) {
        self.remove_all();
        (self.on_shutdown)();
    }

    /// Removes every container (killing what runs) and, in the guest, flushes every file
    /// system to the host.
    fn remove_all(&self) {
        log::info!(
            "shutdown requested ({} requests waiting on processes)",
            self.requests_waiting()
        );
        let ids: Vec<String> = lock(&self.registry).containers.keys().cloned().collect();
        for id in ids {
            let req = rust_vm_protocol::RemoveContainer {
                container_id: id.clone(),
                force: true,
            };
            if let Err(e) = self.remove(&req) {
                log::warn!("removing container {id} at shutdown: {e}");
            }
        }
        if self.mode == AgentMode::Guest {
            nix::unistd::sync();
        }
    }
}

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
