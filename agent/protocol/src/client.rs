//! A small blocking client. Calls may come from several threads at once (e.g. one thread
//! blocked in [`Client::wait`] while another sends [`Client::signal`]): a background thread
//! reads responses and hands each to the caller waiting for its request id.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use oci_spec::runtime::LinuxResources;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::frame::{read_frame, write_frame, FrameError};
use crate::message::{
    Attach, ContainerRef, ContainerState, ContainerStats, CreateContainer, Created, Empty,
    ErrorCode, Exec, ExecRef, ExecStarted, ExitStatus, NetworkConfig, Operation, PortForward,
    ProcessRef, Processes, ProtocolError, RemoveContainer, Request, ResizeTty, Response,
    ResponseError, Signal, StreamKind, UpdateResources, VersionInfo, WriteStdin,
};
use crate::transport::{Address, TransportError};

#[derive(Debug, Error)]
pub enum ClientError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("cannot encode the `{op}` request")]
    Encode {
        op: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The agent answered with an error.
    #[error("agent refused `{op}`: {error}")]
    Remote {
        op: &'static str,
        error: ProtocolError,
    },
    #[error("malformed response to `{op}`: {reason}")]
    MalformedResponse { op: &'static str, reason: String },
    #[error("connection to the agent is closed: {0}")]
    Closed(String),
    #[error("no response to `{op}` within {after:?}")]
    Timeout { op: &'static str, after: Duration },
    #[error("this client was not created from an address, so it cannot open stdio connections")]
    NoAddress,
}

impl ClientError {
    /// The agent's error code, when the agent refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Remote { error, .. } => Some(error.code),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Pending {
    waiters: HashMap<u64, mpsc::Sender<Response>>,
    /// Why the connection is closed, once it is.
    closed: Option<String>,
}

fn lock(pending: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    // A panic while holding the lock cannot leave `Pending` inconsistent: keep going.
    pending.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection to the agent. `Send + Sync`: share it with `Arc` to call from several threads.
pub struct Client {
    writer: Mutex<Box<dyn Write + Send>>,
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicU64,
    address: Option<Address>,
    timeout: Option<Duration>,
    /// Shut down on drop so the reader thread ends.
    socket: Option<UnixStream>,
}

impl Client {
    /// Connects to `addr` (`unix:PATH` or `vsock-uds:PATH:PORT`).
    pub fn connect(addr: &str) -> Result<Client, ClientError> {
        Client::connect_address(addr.parse()?)
    }

    pub fn connect_address(address: Address) -> Result<Client, ClientError> {
        let stream = address.connect()?;
        let mut client = Client::from_stream(stream)?;
        client.address = Some(address);
        Ok(client)
    }

    /// Wraps an already connected socket. Such a client cannot [`Client::attach`] (it does not
    /// know where to open new connections); use [`attach`] with an address for that.
    pub fn from_stream(stream: UnixStream) -> Result<Client, ClientError> {
        let reader = stream.try_clone().map_err(FrameError::Io)?;
        let writer = stream.try_clone().map_err(FrameError::Io)?;
        let mut client = Client::new(reader, writer);
        client.socket = Some(stream);
        Ok(client)
    }

    /// A client over any pair of byte streams (e.g. the two halves of a pipe or a socket).
    pub fn new<R, W>(reader: R, writer: W) -> Client
    where
        R: Read + Send + 'static,
        W: Write + Send + 'static,
    {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let shared = Arc::clone(&pending);
        thread::Builder::new()
            .name("agent-client-reader".into())
            .spawn(move || read_responses(reader, &shared))
            .map(drop)
            .unwrap_or_else(|e| {
                lock(&pending).closed = Some(format!("cannot start the reader thread: {e}"));
            });
        Client {
            writer: Mutex::new(Box::new(writer)),
            pending,
            next_id: AtomicU64::new(1),
            address: None,
            timeout: None,
            socket: None,
        }
    }

    /// Bounds how long every call but [`Client::wait`] (which blocks until the process exits)
    /// waits for its response, and how long [`Client::attach`] waits for the agent to take the
    /// stream. `None`, the default, waits forever.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// The bound [`Client::set_timeout`] set.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The address this client connected to, if it was created from one.
    pub fn address(&self) -> Option<&Address> {
        self.address.as_ref()
    }

    /// Sends one request and waits for its response, at most the client's timeout unless the
    /// request is a `wait`.
    pub fn call<T: DeserializeOwned>(&self, op: Operation) -> Result<T, ClientError> {
        let timeout = match op {
            Operation::Wait(_) => None,
            _ => self.timeout,
        };
        self.call_within(op, timeout)
    }

    /// Sends one request and waits for its response, at most `timeout` (`None`: forever).
    pub fn call_within<T: DeserializeOwned>(
        &self,
        op: Operation,
        timeout: Option<Duration>,
    ) -> Result<T, ClientError> {
        let name = op.name();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = Request { id, op }
            .encode()
            .map_err(|source| ClientError::Encode { op: name, source })?;
        let (tx, rx) = mpsc::channel();
        {
            let mut pending = lock(&self.pending);
            if let Some(reason) = &pending.closed {
                return Err(ClientError::Closed(reason.clone()));
            }
            pending.waiters.insert(id, tx);
        }
        let sent = {
            let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            write_frame(&mut *writer, &body)
        };
        if let Err(e) = sent {
            lock(&self.pending).waiters.remove(&id);
            return Err(e.into());
        }
        let response = match timeout {
            Some(after) => rx.recv_timeout(after).map_err(|e| match e {
                mpsc::RecvTimeoutError::Timeout => {
                    lock(&self.pending).waiters.remove(&id);
                    ClientError::Timeout { op: name, after }
                }
                mpsc::RecvTimeoutError::Disconnected => self.closed_error(),
            })?,
            None => rx.recv().map_err(|_| self.closed_error())?,
        };
        response.into_result().map_err(|e| match e {
            ResponseError::Remote(error) => ClientError::Remote { op: name, error },
            other => ClientError::MalformedResponse {
                op: name,
                reason: other.to_string(),
            },
        })
    }

    fn closed_error(&self) -> ClientError {
        let reason = lock(&self.pending).closed.clone();
        ClientError::Closed(reason.unwrap_or_else(|| "connection closed".into()))
    }

    pub fn version(&self) -> Result<VersionInfo, ClientError> {
        self.call(Operation::Version(Empty {}))
    }

    pub fn ping(&self) -> Result<(), ClientError> {
        self.call::<Empty>(Operation::Ping(Empty {})).map(drop)
    }

    pub fn create_container(&self, request: CreateContainer) -> Result<Created, ClientError> {
        self.call(Operation::CreateContainer(request))
    }

    pub fn start(&self, container_id: &str) -> Result<(), ClientError> {
        self.call::<Empty>(Operation::Start(container_ref(container_id)))
            .map(drop)
    }

    pub fn exec(&self, request: Exec) -> Result<ExecStarted, ClientError> {
        self.call(Operation::Exec(request))
    }

    /// Sends `signal` to the container's init (or exec `exec_id`), or with `all` to every
    /// process of the container.
    pub fn signal(
        &self,
        container_id: &str,
        exec_id: Option<&str>,
        signal: i32,
        all: bool,
    ) -> Result<(), ClientError> {
        self.call::<Empty>(Operation::Signal(Signal {
            container_id: container_id.to_owned(),
            exec_id: exec_id.map(str::to_owned),
            signal,
            all,
        }))
        .map(drop)
    }

    /// Blocks until the process exits.
    pub fn wait(
        &self,
        container_id: &str,
        exec_id: Option<&str>,
    ) -> Result<ExitStatus, ClientError> {
        self.call(Operation::Wait(process_ref(container_id, exec_id)))
    }

    /// Writes to the process's stdin through the control connection (bounded by the frame size;
    /// for bulk input attach a stdin stream instead, and do not mix the two).
    pub fn write_stdin(
        &self,
        container_id: &str,
        exec_id: Option<&str>,
        data: &[u8],
    ) -> Result<(), ClientError> {
        self.call::<Empty>(Operation::WriteStdin(WriteStdin {
            container_id: container_id.to_owned(),
            exec_id: exec_id.map(str::to_owned),
            data: data.to_vec(),
        }))
        .map(drop)
    }

    pub fn close_stdin(
        &self,
        container_id: &str,
        exec_id: Option<&str>,
    ) -> Result<(), ClientError> {
        self.call::<Empty>(Operation::CloseStdin(process_ref(container_id, exec_id)))
            .map(drop)
    }

    pub fn resize_tty(
        &self,
        container_id: &str,
        exec_id: Option<&str>,
        rows: u16,
        cols: u16,
    ) -> Result<(), ClientError> {
        self.call::<Empty>(Operation::ResizeTty(ResizeTty {
            container_id: container_id.to_owned(),
            exec_id: exec_id.map(str::to_owned),
            rows,
            cols,
        }))
        .map(drop)
    }

    pub fn list_processes(&self, container_id: &str) -> Result<Vec<i32>, ClientError> {
        self.call::<Processes>(Operation::ListProcesses(container_ref(container_id)))
            .map(|p| p.pids)
    }

    pub fn stats(&self, container_id: &str) -> Result<ContainerStats, ClientError> {
        self.call(Operation::Stats(container_ref(container_id)))
    }

    pub fn update_resources(
        &self,
        container_id: &str,
        resources: LinuxResources,
    ) -> Result<(), ClientError> {
        self.call::<Empty>(Operation::UpdateResources(UpdateResources {
            container_id: container_id.to_owned(),
            resources: Box::new(resources),
        }))
        .map(drop)
    }

    pub fn state(&self, container_id: &str) -> Result<ContainerState, ClientError> {
        self.call(Operation::State(container_ref(container_id)))
    }

    pub fn remove_container(&self, container_id: &str, force: bool) -> Result<(), ClientError> {
        self.call::<Empty>(Operation::RemoveContainer(RemoveContainer {
            container_id: container_id.to_owned(),
            force,
        }))
        .map(drop)
    }

    /// Forgets an exited exec process, freeing what the agent keeps of it (refused while it runs).
    pub fn remove_exec(&self, container_id: &str, exec_id: &str) -> Result<(), ClientError> {
        self.call::<Empty>(Operation::RemoveExec(ExecRef {
            container_id: container_id.to_owned(),
            exec_id: exec_id.to_owned(),
        }))
        .map(drop)
    }

    /// Sets up the pod's network in the VM (before the first container).
    pub fn configure_network(&self, config: NetworkConfig) -> Result<(), ClientError> {
        self.call::<Empty>(Operation::ConfigureNetwork(config))
            .map(drop)
    }

    /// Asks the agent to power the VM off (host mode: to exit).
    pub fn shutdown(&self) -> Result<(), ClientError> {
        self.call::<Empty>(Operation::Shutdown(Empty {})).map(drop)
    }

    /// Opens a stdio stream connection for the process. For stdout/stderr read until EOF; for
    /// stdin write, and `shutdown(Shutdown::Write)` (or drop) to close the process's stdin.
    pub fn attach(
        &self,
        container_id: &str,
        exec_id: Option<&str>,
        stream: StreamKind,
    ) -> Result<UnixStream, ClientError> {
        let address = self.address.as_ref().ok_or(ClientError::NoAddress)?;
        attach_within(address, container_id, exec_id, stream, self.timeout)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(socket) = &self.socket {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

/// Opens a stdio stream connection to the agent at `address` (see [`Client::attach`]), waiting
/// for the agent to take it as long as it takes.
pub fn attach(
    address: &Address,
    container_id: &str,
    exec_id: Option<&str>,
    stream: StreamKind,
) -> Result<UnixStream, ClientError> {
    attach_within(address, container_id, exec_id, stream, None)
}

/// [`attach`], waiting at most `timeout` for the agent to take the stream.
pub fn attach_within(
    address: &Address,
    container_id: &str,
    exec_id: Option<&str>,
    stream: StreamKind,
    timeout: Option<Duration>,
) -> Result<UnixStream, ClientError> {
    let op = Operation::Attach(Attach {
        container_id: container_id.to_owned(),
        exec_id: exec_id.map(str::to_owned),
        stream,
    });
    open_stream(address, op, timeout)
}

/// Opens a connection to the agent at `address` that carries raw bytes both ways to TCP port
/// `port` of the VM's loopback (`127.0.0.1:port` in the guest's pod network), waiting at most
/// `timeout` for the agent to connect there. The agent's refusal (nothing listens) comes back
/// as [`ClientError::Remote`].
pub fn port_forward_within(
    address: &Address,
    port: u16,
    timeout: Option<Duration>,
) -> Result<UnixStream, ClientError> {
    open_stream(
        address,
        Operation::PortForward(PortForward { port }),
        timeout,
    )
}

/// Sends `op` as the first request of a new connection and, once the agent answers `{}`,
/// returns the connection as a raw byte stream.
fn open_stream(
    address: &Address,
    op: Operation,
    timeout: Option<Duration>,
) -> Result<UnixStream, ClientError> {
    let name = op.name();
    let mut conn = address.connect()?;
    conn.set_read_timeout(timeout).map_err(FrameError::Io)?;
    let body = Request { id: 1, op }
        .encode()
        .map_err(|source| ClientError::Encode { op: name, source })?;
    write_frame(&mut conn, &body)?;
    let reply = match read_frame(&mut conn) {
        Ok(reply) => reply,
        Err(FrameError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Err(ClientError::Timeout {
                op: name,
                after: timeout.unwrap_or_default(),
            })
        }
        Err(e) => return Err(e.into()),
    }
    .ok_or_else(|| ClientError::Closed(format!("agent closed the {name} connection")))?;
    // The stream itself blocks: output comes when the other end writes it.
    conn.set_read_timeout(None).map_err(FrameError::Io)?;
    let response = Response::decode(&reply).map_err(|e| ClientError::MalformedResponse {
        op: name,
        reason: e.to_string(),
    })?;
    match response.into_result::<Empty>() {
        Ok(_) => Ok(conn),
        Err(ResponseError::Remote(error)) => Err(ClientError::Remote { op: name, error }),
        Err(other) => Err(ClientError::MalformedResponse {
            op: name,
            reason: other.to_string(),
        }),
    }
}

fn container_ref(container_id: &str) -> ContainerRef {
    ContainerRef {
        container_id: container_id.to_owned(),
    }
}

fn process_ref(container_id: &str, exec_id: Option<&str>) -> ProcessRef {
    ProcessRef {
        container_id: container_id.to_owned(),
        exec_id: exec_id.map(str::to_owned),
    }
}

fn read_responses(mut reader: impl Read, pending: &Mutex<Pending>) {
    let reason = loop {
        let body = match read_frame(&mut reader) {
            Ok(Some(body)) => body,
            Ok(None) => break "agent closed the connection".to_owned(),
            Err(e) => break e.to_string(),
        };
        let response = match Response::decode(&body) {
            Ok(response) => response,
            Err(e) => break format!("agent sent an unreadable response: {e}"),
        };
        let Some(id) = response.id else {
            // The agent could not read one of our requests and will close the connection.
            let what = response
                .error
                .map(|e| e.to_string())
                .unwrap_or_else(|| "a response without id".into());
            break format!("agent rejected a frame: {what}");
        };
        let waiter = lock(pending).waiters.remove(&id);
        if let Some(waiter) = waiter {
            // The caller may have timed out and gone; nothing to do then.
            let _ = waiter.send(response);
        }
    };
    let mut pending = lock(pending);
    pending.closed = Some(reason);
    // Dropping the senders wakes every waiting caller with `Closed`.
    pending.waiters.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ConsoleSize, RootfsSource};

    /// A scripted agent: answers each request with `answer(request)`, in reverse order of
    /// arrival for pairs, to prove responses are matched by id and not by order.
    fn fake_agent(
        stream: UnixStream,
        answer: impl Fn(&Request) -> Response + Send + 'static,
    ) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            let mut reader = stream.try_clone().unwrap();
            let mut writer = stream;
            let mut held: Option<Response> = None;
            while let Ok(Some(body)) = read_frame(&mut reader) {
                let req = Request::decode(&body).unwrap();
                let response = answer(&req);
                if matches!(req.op, Operation::Wait(_)) && held.is_none() {
                    held = Some(response);
                    continue;
                }
                write_frame(&mut writer, &response.encode().unwrap()).unwrap();
                if let Some(held) = held.take() {
                    write_frame(&mut writer, &held.encode().unwrap()).unwrap();
                }
            }
        })
    }

    #[test]
    fn concurrent_calls_are_matched_by_id() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let agent = fake_agent(theirs, |req| match &req.op {
            Operation::Wait(_) => Response::ok(
                req.id,
                &ExitStatus {
                    exit_code: 3,
                    signal: None,
                },
            )
            .unwrap(),
            _ => Response::ok(req.id, &Empty {}).unwrap(),
        });
        let client = Arc::new(Client::from_stream(ours).unwrap());
        let waiter = {
            let client = Arc::clone(&client);
            thread::spawn(move || client.wait("c", None))
        };
        // The wait is held by the fake agent until the signal's reply has gone out.
        thread::sleep(Duration::from_millis(50));
        client.signal("c", None, 15, false).unwrap();
        assert_eq!(waiter.join().unwrap().unwrap().exit_code, 3);
        drop(client);
        agent.join().unwrap();
    }

    #[test]
    fn remote_errors_carry_code_and_message() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let _agent = fake_agent(theirs, |req| {
            Response::error(
                Some(req.id),
                ProtocolError::new(ErrorCode::NotFound, "no container `nope`"),
            )
        });
        let client = Client::from_stream(ours).unwrap();
        let err = client.start("nope").unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::NotFound));
        assert!(err.to_string().contains("no container `nope`"), "{err}");
    }

    #[test]
    fn closed_connection_fails_pending_and_later_calls() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let agent = thread::spawn(move || {
            let mut theirs = theirs;
            // Read one request, then hang up without answering.
            let _ = read_frame(&mut theirs);
        });
        let client = Client::from_stream(ours).unwrap();
        let err = client.ping().unwrap_err();
        assert!(matches!(err, ClientError::Closed(_)), "{err}");
        agent.join().unwrap();
        assert!(matches!(client.ping(), Err(ClientError::Closed(_))));
    }

    #[test]
    fn timeout_is_reported() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let mut client = Client::from_stream(ours).unwrap();
        client.set_timeout(Some(Duration::from_millis(20)));
        let err = client.ping().unwrap_err();
        assert!(
            matches!(err, ClientError::Timeout { op: "ping", .. }),
            "{err}"
        );
    }

    #[test]
    fn wait_outlasts_the_timeout_other_calls_do_not() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let _agent = thread::spawn(move || {
            let mut reader = theirs.try_clone().unwrap();
            let mut writer = theirs;
            while let Ok(Some(body)) = read_frame(&mut reader) {
                let req = Request::decode(&body).unwrap();
                // A wait is answered late, anything else never.
                if matches!(req.op, Operation::Wait(_)) {
                    thread::sleep(Duration::from_millis(200));
                    let exit = ExitStatus {
                        exit_code: 0,
                        signal: None,
                    };
                    let reply = Response::ok(req.id, &exit).unwrap();
                    write_frame(&mut writer, &reply.encode().unwrap()).unwrap();
                }
            }
        });
        let mut client = Client::from_stream(ours).unwrap();
        client.set_timeout(Some(Duration::from_millis(50)));
        assert_eq!(client.wait("c", None).unwrap().exit_code, 0);
        let err = client.start("c").unwrap_err();
        assert!(
            matches!(err, ClientError::Timeout { op: "start", .. }),
            "{err}"
        );
        let err = client
            .call_within::<Empty>(Operation::Ping(Empty {}), Some(Duration::from_millis(10)))
            .unwrap_err();
        assert!(
            matches!(err, ClientError::Timeout { op: "ping", .. }),
            "{err}"
        );
    }

    #[test]
    fn attach_to_a_silent_agent_times_out() {
        let path = std::env::temp_dir().join(format!("rvm-silent-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // Takes the connection and the request, never answers.
        let _agent = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let _ = read_frame(&mut conn);
            thread::sleep(Duration::from_secs(5));
        });
        let address: Address = format!("unix:{}", path.display()).parse().unwrap();
        let started = std::time::Instant::now();
        let err = attach_within(
            &address,
            "c",
            None,
            StreamKind::Stdout,
            Some(Duration::from_millis(100)),
        )
        .unwrap_err();
        assert!(
            matches!(err, ClientError::Timeout { op: "attach", .. }),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn attach_needs_an_address() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let client = Client::from_stream(ours).unwrap();
        assert!(matches!(
            client.attach("c", None, StreamKind::Stdout),
            Err(ClientError::NoAddress)
        ));
    }

    #[test]
    fn create_request_is_sent_whole() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let _agent = fake_agent(theirs, |req| match &req.op {
            Operation::CreateContainer(c) if c.terminal && c.console_size.is_some() => {
                Response::ok(req.id, &Created { pid: 42 }).unwrap()
            }
            _ => Response::error(Some(req.id), ProtocolError::new(ErrorCode::Internal, "bad")),
        });
        let client = Client::from_stream(ours).unwrap();
        let created = client
            .create_container(CreateContainer {
                container_id: "c".into(),
                spec: Box::default(),
                rootfs: RootfsSource::Directory { path: "/r".into() },
                terminal: true,
                console_size: Some(ConsoleSize::default()),
                stdin: true,
            })
            .unwrap();
        assert_eq!(created.pid, 42);
    }
}
