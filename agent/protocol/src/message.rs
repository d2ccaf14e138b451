//! Messages carried in frames: requests (`{"v":1,"id":N,"op":"...","args":{...}}`) and
//! responses (`{"v":1,"id":N,"ok":{...}}` or `{"v":1,"id":N,"error":{"code":"...","message":"..."}}`).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use oci_spec::runtime::{LinuxResources, Process, Spec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

/// Version of the message schema. A request carrying another version is refused with
/// [`ErrorCode::UnsupportedVersion`]; responses carry the version of the side that wrote them.
pub const PROTOCOL_VERSION: u32 = 1;

/// Empty arguments or an empty result (`{}` on the wire).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Where a container's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RootfsSource {
    /// A directory already present in the agent's filesystem (host mode, or a shared directory).
    Directory { path: PathBuf },
    /// A block device (e.g. `/dev/vdb`) the agent mounts as the container's root.
    BlockDevice {
        device: PathBuf,
        #[serde(default = "default_fstype")]
        fstype: String,
        #[serde(default)]
        readonly: bool,
    },
}

fn default_fstype() -> String {
    "ext4".to_owned()
}

/// Terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleSize {
    pub rows: u16,
    pub cols: u16,
}

impl Default for ConsoleSize {
    fn default() -> Self {
        ConsoleSize { rows: 24, cols: 80 }
    }
}

/// One of a process's standard streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    Stdin,
    Stdout,
    Stderr,
}

impl fmt::Display for StreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamKind::Stdin => "stdin",
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateContainer {
    pub container_id: String,
    /// The OCI runtime spec; `root.path` is ignored in favour of `rootfs`.
    pub spec: Box<Spec>,
    pub rootfs: RootfsSource,
    /// Give the init process a terminal. Also enabled by `spec.process.terminal`.
    #[serde(default)]
    pub terminal: bool,
    /// Initial terminal size when a terminal is used (default 24x80).
    #[serde(default)]
    pub console_size: Option<ConsoleSize>,
    /// Give the process a stdin pipe (default). With `false` its stdin is `/dev/null`, so a
    /// process that reads stdin does not wait for a client that will never attach.
    #[serde(default = "yes")]
    pub stdin: bool,
}

fn yes() -> bool {
    true
}

/// Names a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRef {
    pub container_id: String,
}

/// Names a process: a container's init (no `exec_id`) or one of its exec'd processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    pub container_id: String,
    #[serde(default)]
    pub exec_id: Option<String>,
}

/// Names an exec'd process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRef {
    pub container_id: String,
    pub exec_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exec {
    pub container_id: String,
    pub exec_id: String,
    pub process: Box<Process>,
    #[serde(default)]
    pub console_size: Option<ConsoleSize>,
    /// As [`CreateContainer::stdin`].
    #[serde(default = "yes")]
    pub stdin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub container_id: String,
    #[serde(default)]
    pub exec_id: Option<String>,
    /// Signal number (e.g. 9 for SIGKILL, 15 for SIGTERM).
    pub signal: i32,
    /// Send to every process of the container instead of only the named one.
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteStdin {
    pub container_id: String,
    #[serde(default)]
    pub exec_id: Option<String>,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResizeTty {
    pub container_id: String,
    #[serde(default)]
    pub exec_id: Option<String>,
    pub rows: u16,
    pub cols: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateResources {
    pub container_id: String,
    pub resources: Box<LinuxResources>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveContainer {
    pub container_id: String,
    /// Kill whatever still runs instead of refusing to remove a running container.
    #[serde(default)]
    pub force: bool,
}

/// First and only request on a stdio connection. After a successful reply the connection
/// carries the raw bytes of the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attach {
    pub container_id: String,
    #[serde(default)]
    pub exec_id: Option<String>,
    pub stream: StreamKind,
}

/// Turns a new connection into a raw TCP stream to `127.0.0.1:port` in the agent's own network
/// namespace (the VM's: the pod's network), as CRI PortForward needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    pub port: u16,
}

/// The pod's network as the VM's guest should see it: what the host read from the pod's
/// network namespace (docs/networking.md). Every container that names a network namespace by
/// path shares this network (the VM's own namespace in the guest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    pub interfaces: Vec<InterfaceConfig>,
    /// Applied in order after the interfaces are up; the host sends routes without a gateway
    /// (link scope) before routes through one.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Static (permanent) neighbour entries, such as the fixed gateway MAC some CNIs use.
    #[serde(default)]
    pub neighbours: Vec<NeighbourConfig>,
}

/// One guest NIC, found by its MAC address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceConfig {
    /// `aa:bb:cc:dd:ee:ff`: the MAC the VMM gave the virtio-net device (the pod interface's).
    pub mac: String,
    /// The name the pod interface has on the host (e.g. `eth0`); the guest NIC is renamed to it.
    pub name: String,
    pub mtu: u32,
    #[serde(default)]
    pub addresses: Vec<IpCidr>,
}

/// An address with its prefix length (`10.88.0.5/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpCidr {
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteConfig {
    /// `0.0.0.0/0` or `::/0` for a default route.
    pub destination: IpCidr,
    /// Absent for a link-scope route (the destination is on the link).
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// The interface's name (one of [`NetworkConfig::interfaces`]).
    pub interface: String,
    /// Preferred source address.
    #[serde(default)]
    pub source: Option<IpAddr>,
    #[serde(default)]
    pub metric: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourConfig {
    pub address: IpAddr,
    /// `aa:bb:cc:dd:ee:ff`
    pub mac: String,
    pub interface: String,
}

/// Every operation the agent serves. On the wire: `"op"` is the snake_case variant name and
/// `"args"` the variant's fields (omitted or `{}` for operations without arguments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "args", rename_all = "snake_case")]
pub enum Operation {
    /// -> [`VersionInfo`]
    Version(Empty),
    /// -> [`Empty`]
    Ping(Empty),
    /// -> [`Created`]
    CreateContainer(CreateContainer),
    /// -> [`Empty`]
    Start(ContainerRef),
    /// -> [`ExecStarted`]
    Exec(Exec),
    /// -> [`Empty`]
    Signal(Signal),
    /// Blocks until the process exits. -> [`ExitStatus`]
    Wait(ProcessRef),
    /// -> [`Empty`]
    WriteStdin(WriteStdin),
    /// -> [`Empty`]
    CloseStdin(ProcessRef),
    /// -> [`Empty`]
    ResizeTty(ResizeTty),
    /// -> [`Processes`]
    ListProcesses(ContainerRef),
    /// -> [`ContainerStats`]
    Stats(ContainerRef),
    /// -> [`Empty`]
    UpdateResources(UpdateResources),
    /// -> [`ContainerState`]
    State(ContainerRef),
    /// -> [`Empty`]
    RemoveContainer(RemoveContainer),
    /// Forgets an exited exec process (its exit status and buffered output). -> [`Empty`]
    RemoveExec(ExecRef),
    /// Powers the VM off (guest) or stops the agent (host mode) after replying. -> [`Empty`]
    Shutdown(Empty),
    /// Turns the connection into a raw stdio stream. -> [`Empty`]
    Attach(Attach),
    /// Configures the pod's network in the VM (once, before the first container). -> [`Empty`]
    ConfigureNetwork(NetworkConfig),
    /// Turns the connection into a raw TCP stream to `127.0.0.1:port` in the VM. -> [`Empty`]
    PortForward(PortForward),
}

impl Operation {
    /// Every operation name, as it appears in `"op"`.
    pub const NAMES: &'static [&'static str] = &[
        "version",
        "ping",
        "create_container",
        "start",
        "exec",
        "signal",
        "wait",
        "write_stdin",
        "close_stdin",
        "resize_tty",
        "list_processes",
        "stats",
        "update_resources",
        "state",
        "remove_container",
        "remove_exec",
        "shutdown",
        "attach",
        "configure_network",
        "port_forward",
    ];

    /// The operation's wire name.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Version(_) => "version",
            Operation::Ping(_) => "ping",
            Operation::CreateContainer(_) => "create_container",
            Operation::Start(_) => "start",
            Operation::Exec(_) => "exec",
            Operation::Signal(_) => "signal",
            Operation::Wait(_) => "wait",
            Operation::WriteStdin(_) => "write_stdin",
            Operation::CloseStdin(_) => "close_stdin",
            Operation::ResizeTty(_) => "resize_tty",
            Operation::ListProcesses(_) => "list_processes",
            Operation::Stats(_) => "stats",
            Operation::UpdateResources(_) => "update_resources",
            Operation::State(_) => "state",
            Operation::RemoveContainer(_) => "remove_container",
            Operation::RemoveExec(_) => "remove_exec",
            Operation::Shutdown(_) => "shutdown",
            Operation::Attach(_) => "attach",
            Operation::ConfigureNetwork(_) => "configure_network",
            Operation::PortForward(_) => "port_forward",
        }
    }
}

/// A request: an operation with the id its response will carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: u64,
    pub op: Operation,
}

impl Request {
    /// Serialises the request into a frame body.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut value = serde_json::to_value(&self.op)?;
        if let Value::Object(map) = &mut value {
            map.insert("v".into(), Value::from(PROTOCOL_VERSION));
            map.insert("id".into(), Value::from(self.id));
        }
        serde_json::to_vec(&value)
    }

    /// Parses a frame body. On failure the error carries the request id when one could be read,
    /// so that the error reply can still be matched by the client.
    pub fn decode(body: &[u8]) -> Result<Request, DecodeError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| DecodeError {
            id: None,
            error: ProtocolError::new(
                ErrorCode::InvalidFrame,
                format!("frame is not valid JSON: {e}"),
            ),
        })?;
        let Value::Object(mut map) = value else {
            return Err(DecodeError {
                id: None,
                error: ProtocolError::new(ErrorCode::InvalidFrame, "frame is not a JSON object"),
            });
        };
        let id = map.get("id").and_then(Value::as_u64);
        let fail = |code, message: String| DecodeError {
            id,
            error: ProtocolError::new(code, message),
        };
        let Some(id) = id else {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "field `id` is missing or not an unsigned integer".into(),
            ));
        };
        match map.get("v") {
            Some(v) if v.as_u64() == Some(u64::from(PROTOCOL_VERSION)) => {}
            Some(v) => {
                return Err(fail(
                    ErrorCode::UnsupportedVersion,
                    format!(
                    "protocol version {v} is not supported (this side speaks {PROTOCOL_VERSION})"
                ),
                ))
            }
            None => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "field `v` (protocol version) is missing".into(),
                ))
            }
        }
        let op = match map.get("op") {
            Some(Value::String(op)) => op.clone(),
            Some(_) => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "field `op` is not a string".into(),
                ))
            }
            None => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "field `op` is missing".into(),
                ))
            }
        };
        if !Operation::NAMES.contains(&op.as_str()) {
            return Err(fail(
                ErrorCode::UnknownOperation,
                format!("unknown operation `{op}`"),
            ));
        }
        let args = match map.remove("args") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(args) => args,
        };
        let mut tagged = Map::new();
        tagged.insert("op".into(), Value::String(op.clone()));
        tagged.insert("args".into(), args);
        let op = serde_json::from_value(Value::Object(tagged)).map_err(|e| {
            fail(
                ErrorCode::InvalidArgument,
                format!("invalid arguments for `{op}`: {e}"),
            )
        })?;
        Ok(Request { id, op })
    }
}

/// A request that could not be decoded, with what to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The request id, when the frame was readable far enough to have one.
    pub id: Option<u64>,
    pub error: ProtocolError,
}

/// Machine-readable error class of a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a JSON object.
    InvalidFrame,
    /// The frame exceeds [`crate::MAX_FRAME_SIZE`]; the connection is closed after this reply.
    FrameTooLarge,
    /// The request lacks `v`, `id` or `op`, or they have the wrong type.
    InvalidRequest,
    /// `v` names a protocol version this side does not speak.
    UnsupportedVersion,
    /// `op` names no known operation.
    UnknownOperation,
    /// The arguments are malformed or semantically wrong (e.g. a bad OCI spec field).
    InvalidArgument,
    /// No container, exec or stream by that name.
    NotFound,
    /// A container or exec with that id exists already, or a stream is already attached.
    AlreadyExists,
    /// The object is not in a state that allows the operation (e.g. start twice).
    FailedPrecondition,
    /// The operation is valid but not supported by this agent (e.g. cgroups disabled).
    Unsupported,
    /// Setting up or acting on a container failed in the system (mount, clone, cgroup, ...).
    ContainerFailed,
    /// Anything else going wrong inside the agent.
    Internal,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = serde_json::to_value(self).map_err(|_| fmt::Error)?;
        f.write_str(value.as_str().unwrap_or("unknown"))
    }
}

/// An error reply: a code and a message naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
        }
    }
}

/// A response frame. Exactly one of `ok` and `error` is present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    /// Id of the request answered; `null` when the request was unreadable.
    pub id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ProtocolError>,
}

impl Response {
    pub fn ok(id: u64, result: &impl Serialize) -> Result<Response, serde_json::Error> {
        Ok(Response {
            v: PROTOCOL_VERSION,
            id: Some(id),
            ok: Some(serde_json::to_value(result)?),
            error: None,
        })
    }

    pub fn error(id: Option<u64>, error: ProtocolError) -> Response {
        Response {
            v: PROTOCOL_VERSION,
            id,
            ok: None,
            error: Some(error),
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    pub fn decode(body: &[u8]) -> Result<Response, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The typed result, or the remote error.
    pub fn into_result<T: DeserializeOwned>(self) -> Result<T, ResponseError> {
        match (self.ok, self.error) {
            (_, Some(error)) => Err(ResponseError::Remote(error)),
            (Some(ok), None) => serde_json::from_value(ok).map_err(ResponseError::Malformed),
            (None, None) => Err(ResponseError::Empty),
        }
    }
}

#[derive(Debug, Error)]
pub enum ResponseError {
    #[error("agent error: {0}")]
    Remote(ProtocolError),
    #[error("response result does not match the expected type: {0}")]
    Malformed(serde_json::Error),
    #[error("response has neither `ok` nor `error`")]
    Empty,
}

/// Whether the agent runs as the guest's init or as a host process (test/debug back-end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentMode {
    Guest,
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// [`PROTOCOL_VERSION`] of the agent.
    pub protocol: u32,
    /// The agent's package version.
    pub agent_version: String,
    pub mode: AgentMode,
    /// Whether the agent manages cgroups (stats, resource updates).
    pub cgroups: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    /// Pid of the container's init process, in the agent's pid namespace.
    pub pid: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStarted {
    pub pid: i32,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code, or 128 + the signal number when a signal killed the process.
    pub exit_code: i32,
    /// The signal that killed the process, if one did.
    #[serde(default)]
    pub signal: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Processes {
    /// Pids in the agent's pid namespace.
    pub pids: Vec<i32>,
}

/// Figures whose controller is not enabled in the container's cgroup are absent (`None`,
/// left out of the JSON). A reply from an older agent, which always sent them, still parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerStats {
    /// Total CPU time consumed, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// `None` without the memory controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_usage_bytes: Option<u64>,
    /// `None` when unlimited, or without the memory controller (`memory_usage_bytes` absent).
    pub memory_limit_bytes: Option<u64>,
    /// `None` without the pids controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_current: Option<u64>,
    /// `None` when unlimited, or without the pids controller (`pids_current` absent).
    pub pids_limit: Option<u64>,
    /// Times the kernel's OOM killer killed a process of the container; `None` without the
    /// memory controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerStatus {
    /// Created; the init process waits for `start`.
    Created,
    Running,
    /// The init process has exited.
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub container_id: String,
    pub status: ContainerStatus,
    pub pid: i32,
    /// Present once the init process has exited.
    #[serde(default)]
    pub exit: Option<ExitStatus>,
    /// Ids of the exec'd processes the agent tracks for this container (running or exited).
    #[serde(default)]
    pub execs: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::SpecBuilder;

    fn decode_err(body: &[u8]) -> DecodeError {
        Request::decode(body).expect_err("decoding should fail")
    }

    #[test]
    fn request_wire_format() {
        let req = Request {
            id: 7,
            op: Operation::Signal(Signal {
                container_id: "c1".into(),
                exec_id: None,
                signal: 9,
                all: true,
            }),
        };
        let value: Value = serde_json::from_slice(&req.encode().unwrap()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"v": 1, "id": 7, "op": "signal",
                "args": {"container_id": "c1", "exec_id": null, "signal": 9, "all": true}})
        );
    }

    #[test]
    fn every_operation_round_trips() {
        let spec = SpecBuilder::default().build().unwrap();
        let process = spec.process().clone().unwrap();
        let ops = vec![
            Operation::Version(Empty {}),
            Operation::Ping(Empty {}),
            Operation::CreateContainer(CreateContainer {
                container_id: "c".into(),
                spec: Box::new(spec),
                rootfs: RootfsSource::BlockDevice {
                    device: "/dev/vdb".into(),
                    fstype: "ext4".into(),
                    readonly: true,
                },
                terminal: true,
                console_size: Some(ConsoleSize {
                    rows: 50,
                    cols: 100,
                }),
                stdin: false,
            }),
            Operation::Start(ContainerRef {
                container_id: "c".into(),
            }),
            Operation::Exec(Exec {
                container_id: "c".into(),
                exec_id: "e".into(),
                process: Box::new(process),
                console_size: None,
                stdin: true,
            }),
            Operation::Wait(ProcessRef {
                container_id: "c".into(),
                exec_id: Some("e".into()),
            }),
            Operation::WriteStdin(WriteStdin {
                container_id: "c".into(),
                exec_id: None,
                data: b"hi\n".to_vec(),
            }),
            Operation::CloseStdin(ProcessRef {
                container_id: "c".into(),
                exec_id: None,
            }),
            Operation::ResizeTty(ResizeTty {
                container_id: "c".into(),
                exec_id: None,
                rows: 1,
                cols: 2,
            }),
            Operation::ListProcesses(ContainerRef {
                container_id: "c".into(),
            }),
            Operation::Stats(ContainerRef {
                container_id: "c".into(),
            }),
            Operation::UpdateResources(UpdateResources {
                container_id: "c".into(),
                resources: Box::default(),
            }),
            Operation::State(ContainerRef {
                container_id: "c".into(),
            }),
            Operation::RemoveContainer(RemoveContainer {
                container_id: "c".into(),
                force: false,
            }),
            Operation::RemoveExec(ExecRef {
                container_id: "c".into(),
                exec_id: "e".into(),
            }),
            Operation::Shutdown(Empty {}),
            Operation::Attach(Attach {
                container_id: "c".into(),
                exec_id: None,
                stream: StreamKind::Stderr,
            }),
            Operation::ConfigureNetwork(NetworkConfig {
                interfaces: vec![InterfaceConfig {
                    mac: "02:00:0a:58:00:05".into(),
                    name: "eth0".into(),
                    mtu: 1450,
                    addresses: vec![IpCidr {
                        address: "10.88.0.5".parse().unwrap(),
                        prefix_len: 32,
                    }],
                }],
                routes: vec![RouteConfig {
                    destination: IpCidr {
                        address: "0.0.0.0".parse().unwrap(),
                        prefix_len: 0,
                    },
                    gateway: Some("169.254.1.1".parse().unwrap()),
                    interface: "eth0".into(),
                    source: None,
                    metric: None,
                }],
                neighbours: vec![NeighbourConfig {
                    address: "169.254.1.1".parse().unwrap(),
                    mac: "ee:ee:ee:ee:ee:ee".into(),
                    interface: "eth0".into(),
                }],
            }),
            Operation::PortForward(PortForward { port: 8081 }),
        ];
        for (i, op) in ops.into_iter().enumerate() {
            assert!(Operation::NAMES.contains(&op.name()));
            let req = Request { id: i as u64, op };
            let decoded = Request::decode(&req.encode().unwrap()).unwrap();
            assert_eq!(decoded, req);
        }
    }

    #[test]
    fn names_match_serde() {
        let value = serde_json::to_value(Operation::CreateContainer(CreateContainer {
            container_id: "c".into(),
            spec: Box::default(),
            rootfs: RootfsSource::Directory { path: "/r".into() },
            terminal: false,
            console_size: None,
            stdin: true,
        }))
        .unwrap();
        assert_eq!(value["op"], "create_container");
        assert_eq!(value["args"]["rootfs"]["type"], "directory");
    }

    #[test]
    fn stdin_defaults_to_a_pipe() {
        let req = Request::decode(
            br#"{"v":1,"id":1,"op":"create_container","args":{"container_id":"c","spec":{"ociVersion":"1.0.2"},"rootfs":{"type":"block_device","device":"/dev/vdb"}}}"#,
        )
        .unwrap();
        let Operation::CreateContainer(create) = req.op else {
            panic!("wrong operation {:?}", req.op);
        };
        assert!(create.stdin);
        assert!(!create.terminal);
        assert_eq!(
            create.rootfs,
            RootfsSource::BlockDevice {
                device: "/dev/vdb".into(),
                fstype: "ext4".into(),
                readonly: false
            }
        );
    }

    #[test]
    fn missing_args_mean_empty() {
        let req = Request::decode(br#"{"v":1,"id":3,"op":"ping"}"#).unwrap();
        assert_eq!(req.op, Operation::Ping(Empty {}));
        let req = Request::decode(br#"{"v":1,"id":3,"op":"version","args":null}"#).unwrap();
        assert_eq!(req.op, Operation::Version(Empty {}));
    }

    #[test]
    fn garbage_is_invalid_frame() {
        for body in [&b"\xff\xfe garbage"[..], b"", b"{\"v\":1", b"[1,2]", b"42"] {
            let err = decode_err(body);
            assert_eq!(err.id, None);
            assert_eq!(err.error.code, ErrorCode::InvalidFrame, "{body:?}");
        }
    }

    #[test]
    fn unknown_operation_keeps_the_id() {
        let err = decode_err(br#"{"v":1,"id":12,"op":"format_disk","args":{}}"#);
        assert_eq!(err.id, Some(12));
        assert_eq!(err.error.code, ErrorCode::UnknownOperation);
        assert!(err.error.message.contains("format_disk"));
    }

    #[test]
    fn version_is_checked() {
        let err = decode_err(br#"{"v":2,"id":1,"op":"ping"}"#);
        assert_eq!(err.error.code, ErrorCode::UnsupportedVersion);
        assert_eq!(err.id, Some(1));
        let err = decode_err(br#"{"id":1,"op":"ping"}"#);
        assert_eq!(err.error.code, ErrorCode::InvalidRequest);
        assert!(err.error.message.contains("`v`"));
    }

    #[test]
    fn envelope_fields_are_checked() {
        let err = decode_err(br#"{"v":1,"op":"ping"}"#);
        assert_eq!(err.error.code, ErrorCode::InvalidRequest);
        assert!(err.error.message.contains("`id`"));
        let err = decode_err(br#"{"v":1,"id":-4,"op":"ping"}"#);
        assert_eq!(err.error.code, ErrorCode::InvalidRequest);
        let err = decode_err(br#"{"v":1,"id":4,"op":7}"#);
        assert_eq!(err.error.code, ErrorCode::InvalidRequest);
        assert!(err.error.message.contains("`op`"));
        let err = decode_err(br#"{"v":1,"id":4}"#);
        assert!(err.error.message.contains("`op` is missing"));
    }

    #[test]
    fn bad_arguments_name_the_field() {
        let err = decode_err(br#"{"v":1,"id":5,"op":"start","args":{}}"#);
        assert_eq!(err.id, Some(5));
        assert_eq!(err.error.code, ErrorCode::InvalidArgument);
        assert!(
            err.error.message.contains("container_id"),
            "{}",
            err.error.message
        );
        let err = decode_err(
            br#"{"v":1,"id":6,"op":"attach","args":{"container_id":"c","stream":"stdjunk"}}"#,
        );
        assert_eq!(err.error.code, ErrorCode::InvalidArgument);
        assert!(
            err.error.message.contains("stdjunk"),
            "{}",
            err.error.message
        );
    }

    #[test]
    fn error_codes_are_snake_case() {
        let response = Response::error(
            Some(9),
            ProtocolError::new(ErrorCode::AlreadyExists, "container `c` exists"),
        );
        let value: Value = serde_json::from_slice(&response.encode().unwrap()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"v":1,"id":9,"error":{"code":"already_exists","message":"container `c` exists"}})
        );
        assert_eq!(
            ErrorCode::FailedPrecondition.to_string(),
            "failed_precondition"
        );
    }

    #[test]
    fn response_results() {
        let ok = Response::ok(
            1,
            &ExitStatus {
                exit_code: 137,
                signal: Some(9),
            },
        )
        .unwrap();
        let decoded = Response::decode(&ok.encode().unwrap()).unwrap();
        assert_eq!(
            decoded.into_result::<ExitStatus>().unwrap(),
            ExitStatus {
                exit_code: 137,
                signal: Some(9)
            }
        );
        let err = Response::error(Some(1), ProtocolError::new(ErrorCode::NotFound, "no `x`"));
        assert!(matches!(
            err.into_result::<Empty>(),
            Err(ResponseError::Remote(ProtocolError {
                code: ErrorCode::NotFound,
                ..
            }))
        ));
        let wrong = Response::ok(1, &Empty {}).unwrap();
        assert!(matches!(
            wrong.into_result::<ExitStatus>(),
            Err(ResponseError::Malformed(_))
        ));
    }

    #[test]
    fn stats_leave_out_what_the_cgroup_lacks_and_read_older_replies() {
        let partial = ContainerStats {
            cpu_usage_ns: 5000,
            ..Default::default()
        };
        let json = serde_json::to_value(partial).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"cpu_usage_ns": 5000, "memory_limit_bytes": null, "pids_limit": null})
        );
        assert_eq!(
            serde_json::from_value::<ContainerStats>(json).unwrap(),
            partial
        );
        let older = serde_json::json!({
            "cpu_usage_ns": 1, "memory_usage_bytes": 2, "memory_limit_bytes": 3,
            "pids_current": 4, "pids_limit": null, "oom_kills": 0
        });
        let stats: ContainerStats = serde_json::from_value(older).unwrap();
        assert_eq!(stats.memory_usage_bytes, Some(2));
        assert_eq!(stats.pids_current, Some(4));
        assert_eq!(stats.oom_kills, Some(0));
    }
}
