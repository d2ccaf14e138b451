//! The host side of virtio-vsock: a Unix listener for host-initiated connections
//! (`CONNECT <port>\n` -> `OK <host port>\n`), outgoing Unix connections to `<uds_path>_<port>`
//! for guest-initiated ones, and the packets that tie both to the guest.
//!
//! The muxer never touches guest memory: the device feeds it the packets the guest sent and asks
//! it for the next packet to deliver. It only reads a host socket when the guest can take the
//! data, so level-triggered epoll never spins on data nobody can move.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use event_manager::{EventOps, Events};
use vmm_sys_util::epoll::EventSet;

use super::connection::{ConnError, ConnKey, ConnState, Connection, Credit, HostRead};
use super::packet::*;
use super::VsockError;
use crate::logger::guest_warn;

/// Event-loop token for host connection sockets; the fd tells them apart.
pub const TOKEN_STREAM: u32 = 100;
/// Longest `CONNECT <port>` line accepted, newline included.
const MAX_COMMAND: usize = 32;
/// First host port handed to host-initiated connections (well above guest-chosen ones).
const FIRST_HOST_PORT: u32 = 1 << 30;
/// Control packets waiting for RX buffers beyond which the guest's TX queue is left alone.
const MAX_PENDING_CONTROL: usize = 1024;
/// Host sockets (connections and clients still sending CONNECT) one device keeps open at most.
pub const MAX_CONNECTIONS: usize = 1024;

/// A host client that connected to the main socket and has not finished its CONNECT line.
struct Client {
    stream: UnixStream,
    line: Vec<u8>,
    registered: bool,
    closed: bool,
}

/// A packet without payload waiting for an RX buffer.
#[derive(Clone, Copy, Debug)]
struct Control {
    /// Our CID as the guest addressed it (HOST_CID except for RSTs to unreachable CIDs).
    src_cid: u64,
    key: ConnKey,
    op: u16,
    flags: u32,
}

pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    clients: HashMap<RawFd, Client>,
    conns: HashMap<RawFd, Connection>,
    by_key: HashMap<ConnKey, RawFd>,
    /// Connections to drop once their fds are out of the event loop.
    closing: Vec<RawFd>,
    control: VecDeque<Control>,
    /// Connections whose host socket has data for the guest, in arrival order.
    rx_ready: VecDeque<RawFd>,
    next_host_port: u32,
}

impl Muxer {
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, VsockError> {
        let listener = bind_listener(uds_path)?;
        Ok(Self {
            guest_cid,
            uds_path: uds_path.to_owned(),
            listener,
            clients: HashMap::new(),
            conns: HashMap::new(),
            by_key: HashMap::new(),
            closing: Vec::new(),
            control: VecDeque::new(),
            rx_ready: VecDeque::new(),
            next_host_port: FIRST_HOST_PORT,
        })
    }

    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// True when there is something to put on the RX queue.
    pub fn has_rx(&self) -> bool {
        !self.control.is_empty() || !self.rx_ready.is_empty()
    }

    /// True when a packet without payload waits for the guest.
    pub fn has_control(&self) -> bool {
        !self.control.is_empty()
    }

    /// True when so many control packets wait that taking more TX work would grow them unbounded.
    pub fn backlogged(&self) -> bool {
        self.control.len() >= MAX_PENDING_CONTROL
    }

    /// Drops every guest connection (device reset). Host clients still typing CONNECT stay.
    pub fn reset(&mut self) {
        self.control.clear();
        self.rx_ready.clear();
        let fds: Vec<RawFd> = self.conns.keys().copied().collect();
        fds.into_iter().for_each(|fd| self.close(fd));
    }

    fn at_capacity(&self) -> bool {
        self.clients.len() + self.conns.len() >= MAX_CONNECTIONS
    }

    fn queue_control(&mut self, key: ConnKey, op: u16, flags: u32) {
        self.control.push_back(Control {
            src_cid: HOST_CID,
            key,
            op,
            flags,
        });
    }

    /// Forgets a connection; its socket leaves the event loop and closes in `sync_events`.
    fn close(&mut self, fd: RawFd) {
        if let Some(conn) = self.conns.get_mut(&fd) {
            if !conn.closed {
                conn.closed = true;
                self.by_key.remove(&conn.key);
                self.closing.push(fd);
            }
        }
    }

    /// Tells the guest the connection is gone, then closes it.
    fn reset_conn(&mut self, fd: RawFd) {
        if let Some(conn) = self.conns.get(&fd).filter(|c| !c.closed) {
            let key = conn.key;
            self.queue_control(key, OP_RST, 0);
            self.close(fd);
        }
    }

    // ---- Host side ----

    /// Accepts every pending host client on the main socket.
    pub fn accept_clients(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.at_capacity() {
                        log::warn!(
                            "vsock: {MAX_CONNECTIONS} connections open, refusing a host client"
                        );
                        continue;
                    }
                    if let Err(e) = stream.set_nonblocking(true) {
                        log::warn!("vsock: cannot make a host connection non-blocking: {e}");
                        continue;
                    }
                    let client = Client {
                        stream,
                        line: Vec::new(),
                        registered: false,
                        closed: false,
                    };
                    self.clients.insert(client.stream.as_raw_fd(), client);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("vsock: accept on {} failed: {e}", self.uds_path.display());
                    return;
                }
            }
        }
    }

    /// Handles readiness of a host socket: a client's CONNECT line or a connection's data.
    pub fn handle_stream_event(&mut self, fd: RawFd, events: EventSet) {
        if self.clients.contains_key(&fd) {
            self.read_command(fd);
            return;
        }
        let Some(conn) = self.conns.get_mut(&fd).filter(|c| !c.closed) else {
            return;
        };
        if events.contains(EventSet::ERROR) {
            log::debug!("vsock: host socket of {:?} failed", conn.key);
            self.reset_conn(fd);
            return;
        }
        // A hang-up comes whatever we asked for: let the pending read or write discover it.
        let hang_up = events.contains(EventSet::HANG_UP);
        let registered = conn.registered.unwrap_or(EventSet::empty());
        if (events.contains(EventSet::IN) || hang_up && registered.contains(EventSet::IN))
            && !conn.readable
        {
            conn.readable = true;
            self.rx_ready.push_back(fd);
        }
        if events.contains(EventSet::OUT) || hang_up && registered.contains(EventSet::OUT) {
            self.flush_conn(fd);
        }
    }

    /// Reads a client's command byte by byte, so no stream data past the newline is consumed.
    fn read_command(&mut self, fd: RawFd) {
        let Some(client) = self.clients.get_mut(&fd) else {
            return;
        };
        let mut byte = [0u8; 1];
        let port = loop {
            match client.stream.read(&mut byte) {
                Ok(0) => {
                    client.closed = true;
                    return;
                }
                Ok(_) if byte[0] == b'\n' => break parse_connect(&client.line),
                Ok(_) if client.line.len() + 1 >= MAX_COMMAND => break None,
                Ok(_) => client.line.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break None,
            }
        };
        let Some(guest_port) = port else {
            log::warn!(
                "vsock: host client sent {:?}, expected `CONNECT <port>`",
                String::from_utf8_lossy(&client.line)
            );
            client.closed = true;
            return;
        };
        let Some(client) = self.clients.remove(&fd) else {
            return;
        };
        let key = ConnKey {
            host_port: self.allocate_host_port(guest_port),
            guest_port,
        };
        let mut conn =
            Connection::new(client.stream, key, ConnState::Connecting, Credit::new(0, 0));
        // The fd stays in the event loop; sync_events adjusts its interest.
        conn.registered = client.registered.then_some(EventSet::IN);
        self.by_key.insert(key, fd);
        self.conns.insert(fd, conn);
        self.queue_control(key, OP_REQUEST, 0);
    }

    fn allocate_host_port(&mut self, guest_port: u32) -> u32 {
        loop {
            let port = self.next_host_port;
            self.next_host_port = self
                .next_host_port
                .checked_add(1)
                .unwrap_or(FIRST_HOST_PORT);
            let key = ConnKey {
                host_port: port,
                guest_port,
            };
            if !self.by_key.contains_key(&key) {
                return port;
            }
        }
    }

    fn flush_conn(&mut self, fd: RawFd) {
        let Some(conn) = self.conns.get_mut(&fd).filter(|c| !c.closed) else {
            return;
        };
        match conn.flush_to_host() {
            Ok(()) => {
                if conn.credit.update_due() {
                    let key = conn.key;
                    self.queue_control(key, OP_CREDIT_UPDATE, 0);
                }
                // The guest closed fully and everything it sent reached the host: answer RST.
                let conn = &self.conns[&fd];
                if conn.guest_done_sending
                    && conn.guest_done_receiving
                    && conn.pending_to_host() == 0
                {
                    self.reset_conn(fd);
                }
            }
            Err(e) => {
                log::debug!("vsock: writing to the host side of {:?}: {e}", conn.key);
                self.reset_conn(fd);
            }
        }
    }

    // ---- Guest side ----

    /// Acts on one packet the guest sent on the TX queue.
    pub fn handle_guest_packet(&mut self, header: &PacketHeader, payload: &[u8]) {
        let (src_cid, dst_cid, op) = (header.src_cid, header.dst_cid, header.op);
        let key = ConnKey {
            host_port: header.dst_port,
            guest_port: header.src_port,
        };
        if src_cid != self.guest_cid {
            guest_warn!(
                "vsock: dropping a packet from CID {src_cid}, the guest is {}",
                self.guest_cid
            );
            return;
        }
        if op == OP_RST {
            if let Some(&fd) = self.by_key.get(&key) {
                self.close(fd);
            }
            return;
        }
        if dst_cid != HOST_CID || header.type_ != TYPE_STREAM {
            log::debug!("vsock: refusing a packet to CID {dst_cid} of type {}", {
                header.type_
            });
            self.control.push_back(Control {
                src_cid: dst_cid,
                key,
                op: OP_RST,
                flags: 0,
            });
            return;
        }
        let Some(&fd) = self.by_key.get(&key) else {
            if op == OP_REQUEST {
                self.connect_to_host(key, header);
            } else {
                self.queue_control(key, OP_RST, 0);
            }
            return;
        };
        let Some(conn) = self.conns.get_mut(&fd) else {
            return;
        };
        conn.credit.update_peer(header.buf_alloc, header.fwd_cnt);
        if conn.credit.peer_free() > 0 {
            conn.credit_requested = false;
        }
        match (conn.state, op) {
            (ConnState::Connecting, OP_RESPONSE) => self.complete_host_connect(fd),
            (ConnState::Established, OP_RW) => match conn.send_to_host(payload) {
                Ok(()) => {
                    if conn.credit.update_due() {
                        self.queue_control(key, OP_CREDIT_UPDATE, 0);
                    }
                }
                Err(ConnError::CreditExceeded { len, free }) => {
                    guest_warn!(
                        "vsock: guest sent {len} bytes on {key:?} with {free} bytes of credit"
                    );
                    self.reset_conn(fd);
                }
                Err(e) => {
                    log::debug!("vsock: writing to the host side of {key:?}: {e}");
                    self.reset_conn(fd);
                }
            },
            (ConnState::Established, OP_CREDIT_UPDATE) => {}
            (ConnState::Established, OP_CREDIT_REQUEST) => {
                self.queue_control(key, OP_CREDIT_UPDATE, 0);
            }
            (ConnState::Established, OP_SHUTDOWN) => {
                let flags = header.flags;
                conn.guest_done_receiving |= flags & SHUTDOWN_RCV != 0;
                conn.guest_done_sending |= flags & SHUTDOWN_SEND != 0;
                // Drains what is queued and, if the guest is fully done, answers with RST.
                self.flush_conn(fd);
            }
            (state, op) => {
                guest_warn!("vsock: unexpected op {op} on {key:?} in state {state:?}");
                self.reset_conn(fd);
            }
        }
    }

    /// Guest-initiated connection to host port P: connect to `<uds_path>_<P>`.
    fn connect_to_host(&mut self, key: ConnKey, header: &PacketHeader) {
        if self.at_capacity() {
            guest_warn!("vsock: {MAX_CONNECTIONS} connections open, refusing {key:?}");
            self.queue_control(key, OP_RST, 0);
            return;
        }
        let path = port_path(&self.uds_path, key.host_port);
        match connect_nonblocking(&path) {
            Ok(stream) => {
                let fd = stream.as_raw_fd();
                let credit = Credit::new(header.buf_alloc, header.fwd_cnt);
                let conn = Connection::new(stream, key, ConnState::Established, credit);
                self.conns.insert(fd, conn);
                self.by_key.insert(key, fd);
                self.queue_control(key, OP_RESPONSE, 0);
            }
            Err(e) => {
                log::debug!("vsock: guest connect to {}: {e}", path.display());
                self.queue_control(key, OP_RST, 0);
            }
        }
    }

    /// The guest accepted a host-initiated connection: tell the host client its port.
    fn complete_host_connect(&mut self, fd: RawFd) {
        let Some(conn) = self.conns.get_mut(&fd) else {
            return;
        };
        let reply = format!("OK {}\n", conn.key.host_port);
        match conn.stream.write(reply.as_bytes()) {
            Ok(n) if n == reply.len() => conn.state = ConnState::Established,
            result => {
                log::debug!(
                    "vsock: host client of {:?} left before OK: {result:?}",
                    conn.key
                );
                self.reset_conn(fd);
            }
        }
    }

    // ---- Towards the guest ----

    /// The next packet for the guest, with its payload in `payload` (`header.len` bytes).
    /// `payload.len()` is the room the RX buffer has.
    pub fn next_rx_packet(&mut self, payload: &mut [u8]) -> Option<PacketHeader> {
        if let Some(control) = self.control.pop_front() {
            return Some(self.control_header(control));
        }
        while let Some(&fd) = self.rx_ready.front() {
            let Some(conn) = self.conns.get_mut(&fd) else {
                self.rx_ready.pop_front();
                continue;
            };
            if !conn.readable || conn.closed {
                self.rx_ready.pop_front();
                continue;
            }
            let key = conn.key;
            match conn.read_from_host(payload) {
                Ok(HostRead::Data(n)) => {
                    // Round robin: the connection goes to the back while it has more.
                    self.rx_ready.rotate_left(1);
                    let header = self.header(key, OP_RW, 0, n as u32);
                    return Some(header);
                }
                Ok(HostRead::Empty) => {
                    conn.readable = false;
                    self.rx_ready.pop_front();
                    if conn.credit.peer_free() == 0 && !conn.credit_requested {
                        conn.credit_requested = true;
                        return Some(self.header(key, OP_CREDIT_REQUEST, 0, 0));
                    }
                }
                Ok(HostRead::Eof) => {
                    conn.readable = false;
                    conn.host_eof = true;
                    self.rx_ready.pop_front();
                    return Some(self.header(key, OP_SHUTDOWN, SHUTDOWN_SEND, 0));
                }
                Err(e) => {
                    log::debug!("vsock: reading the host side of {key:?}: {e}");
                    self.rx_ready.pop_front();
                    self.close(fd);
                    return Some(self.header(key, OP_RST, 0, 0));
                }
            }
        }
        None
    }

    fn control_header(&mut self, control: Control) -> PacketHeader {
        let mut header = self.header(control.key, control.op, control.flags, 0);
        header.src_cid = control.src_cid;
        header
    }

    fn header(&mut self, key: ConnKey, op: u16, flags: u32, len: u32) -> PacketHeader {
        let (buf_alloc, fwd_cnt) = self
            .by_key
            .get(&key)
            .and_then(|fd| self.conns.get_mut(fd))
            .map_or((0, 0), |conn| conn.credit.advertise());
        PacketHeader {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: key.host_port,
            dst_port: key.guest_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc,
            fwd_cnt,
        }
    }

    // ---- Event loop bookkeeping ----

    /// Brings epoll interest in line with every socket's state and drops closed sockets.
    /// Runs after each event, on the event-loop thread.
    pub fn sync_events(&mut self, ops: &mut EventOps) {
        for fd in std::mem::take(&mut self.closing) {
            if let Some(conn) = self.conns.remove(&fd) {
                if self.by_key.get(&conn.key) == Some(&fd) {
                    self.by_key.remove(&conn.key);
                }
                if conn.registered.is_some() {
                    remove_fd(ops, &conn.stream);
                }
                self.rx_ready.retain(|&f| f != fd);
            }
        }
        self.clients.retain(|_, client| {
            if client.closed && client.registered {
                remove_fd(ops, &client.stream);
            }
            !client.closed
        });
        for client in self.clients.values_mut() {
            if !client.registered {
                client.registered = add_fd(ops, &client.stream, EventSet::IN);
            }
        }
        for conn in self.conns.values_mut() {
            let wanted = conn.wanted_events();
            conn.registered = match (conn.registered, wanted.is_empty()) {
                (None, true) => None,
                (None, false) => add_fd(ops, &conn.stream, wanted).then_some(wanted),
                // Removed rather than modified to empty: epoll would still report hang-ups.
                (Some(_), true) => {
                    remove_fd(ops, &conn.stream);
                    None
                }
                (Some(current), false) if current == wanted => Some(current),
                (Some(_), false) => {
                    let events = Events::with_data(&conn.stream, TOKEN_STREAM, wanted);
                    if let Err(e) = ops.modify(events) {
                        log::error!("vsock: cannot change the events of {:?}: {e:?}", conn.key);
                    }
                    Some(wanted)
                }
            };
        }
    }

    #[cfg(test)]
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        // The socket file would otherwise block the next VMM from binding the same path.
        if let Err(e) = std::fs::remove_file(&self.uds_path) {
            log::warn!("vsock: cannot remove {}: {e}", self.uds_path.display());
        }
    }
}

fn add_fd(ops: &mut EventOps, stream: &UnixStream, events: EventSet) -> bool {
    match ops.add(Events::with_data(stream, TOKEN_STREAM, events)) {
        Ok(()) => true,
        Err(e) => {
            log::error!("vsock: cannot watch a host socket: {e:?}");
            false
        }
    }
}

fn remove_fd(ops: &mut EventOps, stream: &UnixStream) {
    if let Err(e) = ops.remove(Events::empty(stream)) {
        log::error!("vsock: cannot stop watching a host socket: {e:?}");
    }
}

/// Connects to a Unix stream socket without blocking: a listener whose backlog is full refuses
/// (EAGAIN) instead of stalling the event loop until it accepts. std has no such connect.
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a usable Unix socket path",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket we just created and nothing else owns.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // SAFETY: `addr` is an initialised sockaddr_un and `len` does not exceed its size.
    let ret = unsafe {
        libc::connect(
            fd,
            (&raw const addr).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

/// `CONNECT <port>` with an optional trailing carriage return.
fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let port = line.strip_prefix("CONNECT ")?;
    port.trim().parse().ok()
}

/// Where guest connections to host port `port` go: `<uds_path>_<port>`.
pub fn port_path(uds_path: &Path, port: u32) -> PathBuf {
    let mut path = uds_path.as_os_str().to_owned();
    path.push(format!("_{port}"));
    PathBuf::from(path)
}

/// Binds the main socket. A leftover socket file nobody listens on is replaced; a live one, or
/// anything that is not a socket, is an error.
fn bind_listener(path: &Path) -> Result<UnixListener, VsockError> {
    let bind_error = |source| VsockError::Bind {
        path: path.to_owned(),
        source,
    };
    let listener = match UnixListener::bind(path) {
        Ok(listener) => listener,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let is_socket =
                std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
            if !is_socket {
                return Err(VsockError::NotASocket {
                    path: path.to_owned(),
                });
            }
            if !is_stale_socket(path) {
                return Err(VsockError::SocketInUse {
                    path: path.to_owned(),
                });
            }
            log::info!("vsock: replacing stale socket {}", path.display());
            std::fs::remove_file(path).map_err(bind_error)?;
            UnixListener::bind(path).map_err(bind_error)?
        }
        Err(e) => return Err(bind_error(e)),
    };
    listener.set_nonblocking(true).map_err(bind_error)?;
    Ok(listener)
}

/// A socket file nobody accepts on: what a VMM that was killed leaves behind.
fn is_stale_socket(path: &Path) -> bool {
    matches!(
        UnixStream::connect(path),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 1024"), Some(1024));
        assert_eq!(parse_connect(b"CONNECT 52\r"), Some(52));
        assert_eq!(parse_connect(b"CONNECT"), None);
        assert_eq!(parse_connect(b"CONNECT -1"), None);
        assert_eq!(parse_connect(b"connect 5"), None);
        assert_eq!(parse_connect(b"CONNECT 99999999999"), None);
    }

    #[test]
    fn nonblocking_connect_refuses_when_the_backlog_is_full() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("full.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // SAFETY: listen(2) on a socket we own, shrinking its backlog to the minimum.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let mut held = Vec::new();
        let err = loop {
            match connect_nonblocking(&path) {
                Ok(stream) => held.push(stream),
                Err(e) => break e,
            }
            assert!(held.len() < 16, "the backlog never filled");
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(connect_nonblocking(&dir.as_path().join("missing.sock")).is_err());
        assert!(connect_nonblocking(Path::new(&"x".repeat(200))).is_err());
    }

    #[test]
    fn port_paths_follow_the_firecracker_convention() {
        assert_eq!(
            port_path(Path::new("/run/vm/v.sock"), 52),
            PathBuf::from("/run/vm/v.sock_52")
        );
    }
}
