//! virtio-vsock driven as the guest driver would drive it (packets in guest memory, RX buffers
//! posted, queues notified) against real Unix sockets on the host side.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::SubscriberOps;
use vm_memory::{ByteValued, Bytes, GuestAddress};
use vmm_sys_util::tempdir::TempDir;

use super::connection::CONN_BUF_SIZE;
use super::packet::*;
use super::{port_path, Vsock, VsockDeviceConfig, VsockError};
use crate::devices::virtio::test_utils::{
    activate, guest_memory, readable, writable, GuestQueue, Rng,
};
use crate::devices::virtio::VirtioDevice;
use crate::{EventManager, GuestMemory};

const GUEST_CID: u64 = 3;
const RX_BUF_SIZE: u32 = 4096 + HEADER_SIZE as u32;
const RX_BUFS: u64 = 0x10_0000;
const TX_BUFS: u64 = 0x80_0000;
const GUEST_BUF_ALLOC: u32 = 64 * 1024;

struct Guest {
    device: Arc<Mutex<Vsock>>,
    mem: GuestMemory,
    rx: GuestQueue,
    tx: GuestQueue,
    event_manager: EventManager,
    /// RX descriptor head -> buffer address, for buffers the device holds.
    rx_posted: HashMap<u32, u64>,
    next_rx_slot: u64,
    next_tx_slot: u64,
    uds: PathBuf,
    _dir: TempDir,
}

impl Guest {
    fn new() -> Self {
        Self::with_rx_buffers(32)
    }

    fn with_rx_buffers(count: usize) -> Self {
        let dir = TempDir::new().unwrap();
        let uds = dir.as_path().join("vsock.sock");
        let config = VsockDeviceConfig {
            guest_cid: u32::try_from(GUEST_CID).unwrap(),
            uds_path: uds.clone(),
        };
        let device = Arc::new(Mutex::new(Vsock::new(&config).unwrap()));
        let mem = guest_memory();
        let rx = GuestQueue::new(&mem, 0x1_0000, 64);
        let tx = GuestQueue::new(&mem, 0x4_0000, 64);
        let events = GuestQueue::new(&mem, 0x7_0000, 16);
        activate(&mut *device.lock().unwrap(), &mem, &[&rx, &tx, &events]);
        let mut event_manager = EventManager::new().unwrap();
        event_manager.add_subscriber(device.clone());
        let mut guest = Self {
            device,
            rx,
            tx,
            mem,
            event_manager,
            rx_posted: HashMap::new(),
            next_rx_slot: 0,
            next_tx_slot: 0,
            uds,
            _dir: dir,
        };
        guest.post_rx_buffers(count);
        guest
    }

    fn post_rx_buffers(&mut self, count: usize) {
        for _ in 0..count {
            let addr = RX_BUFS + (self.next_rx_slot % 48) * 0x2000;
            self.next_rx_slot += 1;
            let head = self.rx.add_chain(&[writable(addr, RX_BUF_SIZE)]);
            self.rx_posted.insert(u32::from(head), addr);
        }
        self.notify(0);
    }

    fn notify(&self, queue: usize) {
        self.device.lock().unwrap().queue_events()[queue]
            .write(1)
            .unwrap();
    }

    /// Puts a packet on the TX queue, header and payload in separate descriptors as Linux does.
    fn send(&mut self, op: u16, src_port: u32, dst_port: u32, payload: &[u8]) {
        self.send_header(
            PacketHeader {
                src_cid: GUEST_CID,
                dst_cid: HOST_CID,
                src_port,
                dst_port,
                len: payload.len() as u32,
                type_: TYPE_STREAM,
                op,
                flags: 0,
                buf_alloc: GUEST_BUF_ALLOC,
                fwd_cnt: 0,
            },
            payload,
        );
    }

    fn send_header(&mut self, header: PacketHeader, payload: &[u8]) {
        let addr = TX_BUFS + (self.next_tx_slot % 48) * 0x1_2000;
        self.next_tx_slot += 1;
        self.mem.write_obj(header, GuestAddress(addr)).unwrap();
        self.mem
            .write_slice(payload, GuestAddress(addr + 0x100))
            .unwrap();
        let mut bufs = vec![readable(addr, HEADER_SIZE as u32)];
        if !payload.is_empty() {
            bufs.push(readable(addr + 0x100, payload.len() as u32));
        }
        self.tx.add_chain(&bufs);
        self.notify(1);
        self.run_once();
    }

    fn run_once(&mut self) {
        self.event_manager.run_with_timeout(20).unwrap();
        while self.tx.next_used().is_some() {}
    }

    /// Runs the event loop until the device delivers a packet to the guest.
    fn recv(&mut self) -> (PacketHeader, Vec<u8>) {
        for _ in 0..100 {
            if let Some(packet) = self.try_recv() {
                return packet;
            }
            self.event_manager.run_with_timeout(50).unwrap();
        }
        panic!("no packet reached the guest");
    }

    fn try_recv(&mut self) -> Option<(PacketHeader, Vec<u8>)> {
        let (head, len) = self.rx.next_used()?;
        let addr = self.rx_posted.remove(&head).expect("unknown RX buffer");
        let header: PacketHeader = self.mem.read_obj(GuestAddress(addr)).unwrap();
        assert_eq!(len as usize, HEADER_SIZE + header.len as usize);
        let mut payload = vec![0u8; header.len as usize];
        self.mem
            .read_slice(&mut payload, GuestAddress(addr + HEADER_SIZE as u64))
            .unwrap();
        self.post_rx_buffers(1);
        Some((header, payload))
    }

    /// Runs the event loop a while and asserts nothing was delivered.
    fn expect_silence(&mut self) {
        for _ in 0..5 {
            self.event_manager.run_with_timeout(20).unwrap();
        }
        assert_eq!(self.try_recv(), None);
    }

    fn connect_host_client(&mut self, guest_port: u32) -> (UnixStream, u32) {
        let mut client = UnixStream::connect(&self.uds).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client
            .write_all(format!("CONNECT {guest_port}\n").as_bytes())
            .unwrap();
        let (request, _) = self.recv();
        assert_eq!(
            (
                request.op,
                request.dst_port,
                request.src_cid,
                request.dst_cid
            ),
            (OP_REQUEST, guest_port, HOST_CID, GUEST_CID)
        );
        (client, request.src_port)
    }

    /// A guest-initiated connection from `guest_port` to host port `host_port`.
    fn connect_to_host(&mut self, guest_port: u32, host_port: u32) -> UnixStream {
        let listener = UnixListener::bind(port_path(&self.uds, host_port)).unwrap();
        self.send(OP_REQUEST, guest_port, host_port, &[]);
        let (response, _) = self.recv();
        assert_eq!(
            (response.op, response.src_port, response.dst_port),
            (OP_RESPONSE, host_port, guest_port)
        );
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }
}

fn read_line(stream: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while stream.read(&mut byte).unwrap() == 1 {
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    String::from_utf8(line).unwrap()
}

#[test]
fn host_connect_handshake_then_data_both_ways_then_shutdown() {
    let mut guest = Guest::new();
    let (mut client, host_port) = guest.connect_host_client(52);
    assert!(host_port >= 1 << 30);

    guest.send(OP_RESPONSE, 52, host_port, &[]);
    assert_eq!(read_line(&mut client), format!("OK {host_port}\n"));

    client.write_all(b"hello guest").unwrap();
    let (header, payload) = guest.recv();
    assert_eq!(
        (
            header.op,
            header.src_port,
            header.dst_port,
            header.buf_alloc
        ),
        (OP_RW, host_port, 52, CONN_BUF_SIZE)
    );
    assert_eq!(payload, b"hello guest");

    guest.send(OP_RW, 52, host_port, b"hello host");
    let mut buf = [0u8; 10];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello host");

    // The guest closes: it gets RST back and the host client sees end-of-stream.
    let mut shutdown = PacketHeader {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port: 52,
        dst_port: host_port,
        type_: TYPE_STREAM,
        op: OP_SHUTDOWN,
        flags: SHUTDOWN_RCV | SHUTDOWN_SEND,
        buf_alloc: GUEST_BUF_ALLOC,
        ..Default::default()
    };
    guest.send_header(shutdown, &[]);
    let (rst, _) = guest.recv();
    assert_eq!((rst.op, rst.dst_port), (OP_RST, 52));
    assert_eq!(client.read(&mut buf).unwrap(), 0);
    assert_eq!(guest.device.lock().unwrap().connection_count(), 0);

    // A late packet for the closed connection is refused.
    shutdown.op = OP_RW;
    shutdown.flags = 0;
    guest.send_header(shutdown, &[]);
    assert_eq!({ guest.recv().0.op }, OP_RST);
}

#[test]
fn host_data_sent_right_after_connect_is_not_lost() {
    let mut guest = Guest::new();
    let mut client = UnixStream::connect(&guest.uds).unwrap();
    client.write_all(b"CONNECT 7\nearly bytes").unwrap();
    let (request, _) = guest.recv();
    guest.send(OP_RESPONSE, 7, request.src_port, &[]);
    let (data, payload) = guest.recv();
    assert_eq!((data.op, payload.as_slice()), (OP_RW, &b"early bytes"[..]));
}

#[test]
fn guest_refusing_a_host_connect_closes_the_client() {
    let mut guest = Guest::new();
    let (mut client, host_port) = guest.connect_host_client(77);
    guest.send(OP_RST, 77, host_port, &[]);
    let mut buf = [0u8; 16];
    assert_eq!(client.read(&mut buf).unwrap(), 0, "no OK line, just EOF");
}

#[test]
fn malformed_connect_lines_close_the_client_without_guest_traffic() {
    let mut guest = Guest::new();
    for line in [&b"HELLO\n"[..], b"CONNECT x\n", &[b'A'; 100]] {
        let mut client = UnixStream::connect(&guest.uds).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.write_all(line).unwrap();
        guest.expect_silence();
        // Closed: end-of-stream, or a reset when our unread bytes were thrown away.
        let mut buf = [0u8; 8];
        match client.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("client still connected: {other:?}"),
        }
    }
}

#[test]
fn guest_connects_to_the_port_socket_and_data_flows_both_ways() {
    let mut guest = Guest::new();
    let mut stream = guest.connect_to_host(5000, 1234);

    guest.send(OP_RW, 5000, 1234, b"ping");
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");

    stream.write_all(b"pong").unwrap();
    let (header, payload) = guest.recv();
    assert_eq!(
        (header.op, header.src_port, header.dst_port),
        (OP_RW, 1234, 5000)
    );
    assert_eq!(payload, b"pong");

    // The host side closes: the guest is told nothing more will come.
    drop(stream);
    let (shutdown, _) = guest.recv();
    assert_eq!((shutdown.op, shutdown.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));
}

#[test]
fn guest_connect_to_a_port_without_socket_gets_rst() {
    let mut guest = Guest::new();
    guest.send(OP_REQUEST, 5001, 999, &[]);
    let (rst, _) = guest.recv();
    assert_eq!(
        (rst.op, rst.src_port, rst.dst_port, rst.src_cid, rst.dst_cid),
        (OP_RST, 999, 5001, HOST_CID, GUEST_CID)
    );
    // Data for a connection that does not exist: RST as well.
    guest.send(OP_RW, 5001, 999, b"x");
    assert_eq!({ guest.recv().0.op }, OP_RST);
    // An RST for an unknown connection is not answered.
    guest.send(OP_RST, 5001, 999, &[]);
    guest.expect_silence();
}

#[test]
fn packets_with_wrong_addresses_are_dropped_or_refused() {
    let mut guest = Guest::new();
    let mut header = PacketHeader {
        src_cid: 9,
        dst_cid: HOST_CID,
        src_port: 1,
        dst_port: 2,
        type_: TYPE_STREAM,
        op: OP_REQUEST,
        ..Default::default()
    };
    // Spoofed source CID: dropped.
    guest.send_header(header, &[]);
    guest.expect_silence();
    // Not addressed to the host: refused in the name of the CID it was sent to.
    header.src_cid = GUEST_CID;
    header.dst_cid = 42;
    guest.send_header(header, &[]);
    let (rst, _) = guest.recv();
    assert_eq!((rst.op, rst.src_cid), (OP_RST, 42));
    // Not a stream (e.g. SEQPACKET, which we do not offer): refused.
    header.dst_cid = HOST_CID;
    header.type_ = 2;
    guest.send_header(header, &[]);
    assert_eq!({ guest.recv().0.op }, OP_RST);
}

#[test]
fn malformed_tx_chains_are_dropped_without_stopping_the_device() {
    let mut guest = Guest::new();
    // A header cut short.
    guest.tx.add_chain(&[readable(TX_BUFS, 20)]);
    // A header announcing more payload than the chain holds.
    let header = PacketHeader {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        op: OP_RW,
        type_: TYPE_STREAM,
        len: 1000,
        ..Default::default()
    };
    guest
        .mem
        .write_obj(header, GuestAddress(TX_BUFS + 0x1000))
        .unwrap();
    guest
        .tx
        .add_chain(&[readable(TX_BUFS + 0x1000, HEADER_SIZE as u32 + 10)]);
    // A buffer outside guest memory.
    guest.tx.add_chain(&[readable(1 << 40, 64)]);
    guest.notify(1);
    guest.run_once();
    guest.expect_silence();

    guest.send(OP_REQUEST, 1, 4242, &[]);
    assert_eq!({ guest.recv().0.op }, OP_RST);
}

#[test]
fn rx_buffers_too_small_for_a_header_are_returned_empty() {
    let mut guest = Guest::with_rx_buffers(0);
    let tiny = RX_BUFS + 0x70_0000;
    let head = guest.rx.add_chain(&[writable(tiny, 8)]);
    guest.rx_posted.insert(u32::from(head), tiny);
    guest.post_rx_buffers(1);
    guest.send(OP_REQUEST, 5, 6, &[]);
    guest.event_manager.run_with_timeout(20).unwrap();
    assert_eq!(guest.rx.next_used(), Some((u32::from(head), 0)));
    guest.rx_posted.remove(&u32::from(head));
    assert_eq!({ guest.recv().0.op }, OP_RST);
}

/// Found by fuzzing (target `vsock`): a header-only RX buffer at the head of the queue while a
/// host socket had data made the event loop spin: the read was skipped for want of room, the
/// connection counted as drained and its socket re-armed for input that was still there.
#[test]
fn a_header_only_rx_buffer_with_host_data_pending_does_not_spin_the_event_loop() {
    let mut guest = Guest::with_rx_buffers(0);
    let listener = UnixListener::bind(port_path(&guest.uds, 1234)).unwrap();
    guest.send(OP_REQUEST, 5000, 1234, &[]);
    let header_only = RX_BUFS + 0x70_0000;
    let response = guest
        .rx
        .add_chain(&[writable(header_only, HEADER_SIZE as u32)]);
    guest.notify(0);
    guest.event_manager.run_with_timeout(20).unwrap();
    assert_eq!(
        guest.rx.next_used(),
        Some((u32::from(response), HEADER_SIZE as u32))
    );
    let header: PacketHeader = guest.mem.read_obj(GuestAddress(header_only)).unwrap();
    assert_eq!({ header.op }, OP_RESPONSE);
    let (mut stream, _) = listener.accept().unwrap();

    let head = guest
        .rx
        .add_chain(&[writable(header_only, HEADER_SIZE as u32)]);
    guest.notify(0);
    stream.write_all(b"pong").unwrap();
    let idle = (0..100).any(|_| guest.event_manager.run_with_timeout(0).unwrap() == 0);
    assert!(idle, "the event loop never went idle");
    assert_eq!(guest.rx.next_used(), Some((u32::from(head), 0)));

    guest.post_rx_buffers(1);
    let (header, payload) = guest.recv();
    assert_eq!({ header.op }, OP_RW);
    assert_eq!(payload, b"pong");
}

#[test]
fn host_to_guest_data_respects_guest_credit() {
    let mut guest = Guest::new();
    let small = PacketHeader {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port: 40,
        dst_port: 4000,
        type_: TYPE_STREAM,
        op: OP_REQUEST,
        buf_alloc: 8,
        fwd_cnt: 0,
        ..Default::default()
    };
    let listener = UnixListener::bind(port_path(&guest.uds, 4000)).unwrap();
    guest.send_header(small, &[]);
    assert_eq!({ guest.recv().0.op }, OP_RESPONSE);
    let (mut stream, _) = listener.accept().unwrap();

    stream.write_all(b"0123456789abcdefghij").unwrap();
    let (first, payload) = guest.recv();
    assert_eq!((first.op, payload.as_slice()), (OP_RW, &b"01234567"[..]));
    // Out of credit: the device asks for more instead of sending.
    let (ask, _) = guest.recv();
    assert_eq!({ ask.op }, OP_CREDIT_REQUEST);
    guest.expect_silence();

    let mut update = small;
    update.op = OP_CREDIT_UPDATE;
    update.fwd_cnt = 8;
    guest.send_header(update, &[]);
    assert_eq!(guest.recv().1, b"89abcdef");
    assert_eq!({ guest.recv().0.op }, OP_CREDIT_REQUEST);
    update.fwd_cnt = 16;
    guest.send_header(update, &[]);
    assert_eq!(guest.recv().1, b"ghij");
}

#[test]
fn device_reports_its_credit_to_the_guest() {
    let mut guest = Guest::new();
    let mut stream = guest.connect_to_host(41, 4100);
    stream.set_nonblocking(true).unwrap();

    // Asked directly.
    guest.send(OP_RW, 41, 4100, &[1; 1000]);
    guest.send(OP_CREDIT_REQUEST, 41, 4100, &[]);
    let (update, _) = guest.recv();
    assert_eq!(
        (update.op, update.buf_alloc, update.fwd_cnt),
        (OP_CREDIT_UPDATE, CONN_BUF_SIZE, 1000)
    );

    // Unasked, once the guest's view of our free space drops below half.
    let chunk = vec![2u8; 50 * 1024];
    let mut sink = vec![0u8; 256 * 1024];
    let mut forwarded = 1000;
    let update = loop {
        guest.send(OP_RW, 41, 4100, &chunk);
        forwarded += chunk.len() as u32;
        while let Ok(n) = stream.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
        if let Some((header, _)) = guest.try_recv() {
            break header;
        }
        assert!(forwarded < CONN_BUF_SIZE, "no credit update was sent");
    };
    assert_eq!((update.op, update.fwd_cnt), (OP_CREDIT_UPDATE, forwarded));
}

#[test]
fn guest_overrunning_its_credit_is_reset() {
    let mut guest = Guest::new();
    // The host never reads, so data piles up in the device beyond the socket buffer.
    let _stream = guest.connect_to_host(42, 4200);
    let chunk = vec![3u8; 64 * 1024];
    let mut sent = 0;
    let rst = loop {
        guest.send(OP_RW, 42, 4200, &chunk);
        sent += chunk.len();
        if let Some((header, _)) = guest.try_recv() {
            if header.op == OP_RST {
                break header;
            }
        }
        assert!(sent < 16 << 20, "never reset");
    };
    assert_eq!({ rst.dst_port }, 42);
    assert_eq!(guest.device.lock().unwrap().connection_count(), 0);
}

#[test]
fn device_reset_closes_connections() {
    let mut guest = Guest::new();
    let mut stream = guest.connect_to_host(43, 4300);
    guest.device.lock().unwrap().reset();
    guest.event_manager.run_with_timeout(100).unwrap();
    assert_eq!(guest.device.lock().unwrap().connection_count(), 0);
    let mut buf = [0u8; 1];
    assert_eq!(stream.read(&mut buf).unwrap(), 0);
}

#[test]
fn host_clients_wait_for_the_driver() {
    let dir = TempDir::new().unwrap();
    let uds = dir.as_path().join("v.sock");
    let config = VsockDeviceConfig {
        guest_cid: 3,
        uds_path: uds.clone(),
    };
    let device = Arc::new(Mutex::new(Vsock::new(&config).unwrap()));
    let mut event_manager = EventManager::new().unwrap();
    event_manager.add_subscriber(device.clone());
    let mut client = UnixStream::connect(&uds).unwrap();
    client.write_all(b"CONNECT 9\n").unwrap();
    for _ in 0..5 {
        event_manager.run_with_timeout(20).unwrap();
    }
    assert_eq!(device.lock().unwrap().connection_count(), 1);

    // The driver comes up later and finds the request waiting.
    let mem = guest_memory();
    let mut rx = GuestQueue::new(&mem, 0x1_0000, 16);
    let tx = GuestQueue::new(&mem, 0x4_0000, 16);
    let ev = GuestQueue::new(&mem, 0x7_0000, 16);
    rx.add_chain(&[writable(RX_BUFS, RX_BUF_SIZE)]);
    activate(&mut *device.lock().unwrap(), &mem, &[&rx, &tx, &ev]);
    let mut delivered = None;
    for _ in 0..20 {
        event_manager.run_with_timeout(20).unwrap();
        delivered = rx.next_used();
        if delivered.is_some() {
            break;
        }
    }
    assert!(delivered.is_some());
    let header: PacketHeader = mem.read_obj(GuestAddress(RX_BUFS)).unwrap();
    assert_eq!((header.op, header.dst_port), (OP_REQUEST, 9));
}

#[test]
fn config_space_holds_the_guest_cid() {
    let guest = Guest::new();
    let mut cid = [0u8; 8];
    guest.device.lock().unwrap().read_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), GUEST_CID);
}

#[test]
fn reserved_cids_are_refused() {
    let dir = TempDir::new().unwrap();
    for cid in [0, 1, 2, u32::MAX] {
        let config = VsockDeviceConfig {
            guest_cid: cid,
            uds_path: dir.as_path().join("v.sock"),
        };
        assert!(matches!(
            Vsock::new(&config),
            Err(VsockError::InvalidCid(c)) if c == u64::from(cid)
        ));
    }
}

#[test]
fn socket_path_in_use_is_a_clear_error_and_stale_sockets_are_replaced() {
    let dir = TempDir::new().unwrap();
    let path = dir.as_path().join("v.sock");
    let config = VsockDeviceConfig {
        guest_cid: 3,
        uds_path: path.clone(),
    };
    let first = Vsock::new(&config).unwrap();
    let err = Vsock::new(&config).err().unwrap();
    assert!(matches!(err, VsockError::SocketInUse { .. }));
    assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");

    // The device removes its socket when it goes away.
    drop(first);
    assert!(!path.exists());

    // A socket left behind by a killed process is taken over.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    Vsock::new(&config).unwrap();

    // Anything else at the path is not touched.
    let file = dir.as_path().join("file");
    std::fs::write(&file, b"data").unwrap();
    let config = VsockDeviceConfig {
        guest_cid: 3,
        uds_path: file.clone(),
    };
    assert!(matches!(
        Vsock::new(&config),
        Err(VsockError::NotASocket { .. })
    ));
    assert_eq!(std::fs::read(&file).unwrap(), b"data");
}

#[test]
fn header_layout_matches_the_spec() {
    let header = PacketHeader {
        len: 0x0102_0304,
        op: OP_CREDIT_UPDATE,
        ..Default::default()
    };
    let bytes = header.as_slice();
    assert_eq!(bytes.len(), 44);
    assert_eq!(&bytes[24..28], &0x0102_0304u32.to_le_bytes());
    assert_eq!(&bytes[30..32], &OP_CREDIT_UPDATE.to_le_bytes());
}

#[test]
fn random_descriptor_tables_never_break_the_device() {
    let mut guest = Guest::with_rx_buffers(0);
    let listener = UnixListener::bind(port_path(&guest.uds, 77)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut rng = Rng::new(0x00c0_ffee);
    for round in 0..200 {
        guest.tx.add_garbage(&mut rng, 3);
        guest.notify(1);
        // Now and then a real packet, so garbage meets live connections and pending replies.
        if round % 10 == 0 {
            guest.send(OP_REQUEST, 9000 + round, 77, &[]);
        }
        guest.rx.add_garbage(&mut rng, 2);
        guest.notify(0);
        guest.event_manager.run_with_timeout(10).unwrap();
        while guest.tx.next_used().is_some() {}
        while guest.rx.next_used().is_some() {}
        while listener.accept().is_ok() {}
    }
    // Still answering: a request to a port without a socket is refused (after whatever replies
    // were still waiting for a usable RX buffer).
    guest.rx_posted.clear();
    guest.post_rx_buffers(8);
    guest.send(OP_REQUEST, 1, 4343, &[]);
    let refused = (0..64).any(|_| {
        let (header, _) = guest.recv();
        (header.op, header.dst_port) == (OP_RST, 1)
    });
    assert!(refused);
}
