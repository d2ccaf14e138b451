//! virtio-net driven the way a guest driver would drive it (frames and RX buffers in guest
//! memory, queues notified, the event loop run, the used rings read back). The tap is a Unix
//! datagram socket pair, whose datagrams keep frame boundaries as a tap does; one root-only test
//! uses a real tap in its own network namespace.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::SubscriberOps;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::*;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VRING_DESC_F_NEXT};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};

use super::device::{offload_flags, BUDGET, MAX_BUFFER_LEN, VNET_HDR_LEN};
use super::{MacAddr, Net, NetDeviceConfig, NetError, TapIo};
use crate::devices::virtio::test_utils::{
    activate, guest_memory, readable, writable, Buf, GuestQueue, Rng, MEM_SIZE,
};
use crate::devices::virtio::{VirtioDevice, IRQ_VRING};
use crate::{EventManager, GuestMemory};

const MAC: [u8; 6] = [0x02, 0, 0x0a, 0x58, 0, 5];
const RX_BUFS: u64 = 0x10_0000;
/// Room for one RX buffer of MAX_BUFFER_LEN bytes.
const RX_SLOT: u64 = 0x1_1000;
const TX_BUFS: u64 = 0x80_0000;
const TX_SLOT: u64 = 0x1_2000;
const ETHERTYPE: u16 = 0x88b5;

/// A tap stand-in: one end of a datagram socket pair; offload settings are recorded.
struct FakeTap {
    sock: UnixDatagram,
    offloads: Arc<Mutex<Vec<u32>>>,
    reads: Arc<AtomicUsize>,
}

impl AsRawFd for FakeTap {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl TapIo for FakeTap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let len = self.sock.recv(buf)?;
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(len)
    }
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.sock.send(frame)
    }
    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        self.offloads.lock().unwrap().push(flags);
        Ok(())
    }
}

/// The host end of the fake tap.
struct Host {
    peer: UnixDatagram,
    offloads: Arc<Mutex<Vec<u32>>>,
    reads: Arc<AtomicUsize>,
}

impl Host {
    fn send(&self, frame: &[u8]) {
        self.peer.send(frame).unwrap();
    }

    fn recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; MAX_BUFFER_LEN + 100];
        match self.peer.recv(&mut buf) {
            Ok(len) => Some(buf[..len].to_vec()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => panic!("{e}"),
        }
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    fn last_offloads(&self) -> Option<u32> {
        self.offloads.lock().unwrap().last().copied()
    }
}

fn net_config(tap_fd: i32) -> NetDeviceConfig {
    NetDeviceConfig {
        tap_fd,
        mac: MacAddr(MAC),
        mtu: 1450,
    }
}

/// A frame of `len` bytes (Ethernet header included) to `dst`, numbered by `seed`.
fn frame(dst: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut frame = Vec::with_capacity(len);
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    frame.extend_from_slice(&ETHERTYPE.to_be_bytes());
    frame.extend((0..len - 14).map(|i| (i as u8).wrapping_mul(13) ^ seed));
    frame
}

/// A header as a guest sends it: checksum offload asked for, so its bytes are not all zero.
fn tx_header() -> [u8; VNET_HDR_LEN] {
    let mut hdr = [0u8; VNET_HDR_LEN];
    hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
    hdr[2..4].copy_from_slice(&14u16.to_le_bytes());
    hdr[6..8].copy_from_slice(&34u16.to_le_bytes());
    hdr[8..10].copy_from_slice(&6u16.to_le_bytes());
    hdr
}

/// A header as the tap gives it: the two `num_buffers` bytes hold garbage the device replaces.
fn rx_header() -> [u8; VNET_HDR_LEN] {
    let mut hdr = [0u8; VNET_HDR_LEN];
    hdr[0] = VIRTIO_NET_HDR_F_DATA_VALID as u8;
    hdr[10] = 0xee;
    hdr[11] = 0xee;
    hdr
}

fn with_header(hdr: [u8; VNET_HDR_LEN], frame: &[u8]) -> Vec<u8> {
    let mut out = hdr.to_vec();
    out.extend_from_slice(frame);
    out
}

struct Guest<T: TapIo + 'static> {
    device: Arc<Mutex<Net<T>>>,
    mem: GuestMemory,
    rx: GuestQueue,
    tx: GuestQueue,
    event_manager: EventManager,
    /// RX descriptor head -> buffer address, for buffers the device holds.
    rx_posted: HashMap<u32, u64>,
    next_rx_slot: u64,
    next_tx_slot: u64,
}

fn fake_tap() -> (FakeTap, Host) {
    let (sock, peer) = UnixDatagram::pair().unwrap();
    sock.set_nonblocking(true).unwrap();
    peer.set_nonblocking(true).unwrap();
    let offloads = Arc::new(Mutex::new(Vec::new()));
    let reads = Arc::new(AtomicUsize::new(0));
    let tap = FakeTap {
        sock,
        offloads: offloads.clone(),
        reads: reads.clone(),
    };
    (
        tap,
        Host {
            peer,
            offloads,
            reads,
        },
    )
}

/// An activated device with every offered feature accepted, over a fake tap.
fn guest() -> (Guest<FakeTap>, Host) {
    guest_with(16, None)
}

fn guest_with(queue_size: u16, features: Option<u64>) -> (Guest<FakeTap>, Host) {
    let (tap, host) = fake_tap();
    let device = Net::with_tap(tap, &net_config(0)).unwrap();
    let guest = Guest::new(device, queue_size, features);
    (guest, host)
}

impl<T: TapIo + 'static> Guest<T> {
    fn new(device: Net<T>, queue_size: u16, features: Option<u64>) -> Self {
        let device = Arc::new(Mutex::new(device));
        let mem = guest_memory();
        let rx = GuestQueue::new(&mem, 0x1_0000, queue_size);
        let tx = GuestQueue::new(&mem, 0x4_0000, queue_size);
        let mut event_manager = EventManager::new().unwrap();
        event_manager.add_subscriber(device.clone());
        let guest = Self {
            device,
            mem,
            rx,
            tx,
            event_manager,
            rx_posted: HashMap::new(),
            next_rx_slot: 0,
            next_tx_slot: 0,
        };
        guest.activate(features);
        guest
    }

    fn activate(&self, features: Option<u64>) {
        let mut device = self.device.lock().unwrap();
        match features {
            None => activate(&mut *device, &self.mem, &[&self.rx, &self.tx]),
            Some(features) => {
                device.set_acked_features(features);
                for (guest, queue) in [&self.rx, &self.tx].iter().zip(device.queues_mut()) {
                    guest.configure(queue);
                }
                device.activate(self.mem.clone()).unwrap();
            }
        }
    }

    fn notify(&self, queue: usize) {
        self.device.lock().unwrap().queue_events()[queue]
            .write(1)
            .unwrap();
    }

    fn turn(&mut self) {
        self.event_manager.run_with_timeout(50).unwrap();
    }

    /// Posts `count` RX buffers of `len` bytes each and notifies the RX queue.
    fn post_rx(&mut self, count: usize, len: u32) {
        for _ in 0..count {
            let addr = RX_BUFS + (self.next_rx_slot % 64) * RX_SLOT;
            self.next_rx_slot += 1;
            self.post_rx_chain(&[writable(addr, len)], addr);
        }
        self.notify(0);
    }

    fn post_rx_chain(&mut self, bufs: &[Buf], addr: u64) -> u16 {
        let head = self.rx.add_chain(bufs);
        self.rx_posted.insert(u32::from(head), addr);
        head
    }

    /// Runs the event loop until the device returns an RX buffer: (head, used length).
    fn next_rx(&mut self) -> (u32, u32) {
        for _ in 0..50 {
            if let Some(used) = self.rx.next_used() {
                return used;
            }
            self.event_manager.run_with_timeout(100).unwrap();
        }
        panic!("the device never returned an RX buffer");
    }

    /// The next received frame, header included.
    fn recv(&mut self) -> Vec<u8> {
        let (head, len) = self.next_rx();
        let addr = self.rx_posted.remove(&head).unwrap();
        let mut buf = vec![0u8; len as usize];
        self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }

    /// Writes a header and a frame into guest memory and returns them as two descriptors.
    fn tx_bufs(&mut self, hdr: &[u8], frame: &[u8]) -> [Buf; 2] {
        let addr = TX_BUFS + (self.next_tx_slot % 48) * TX_SLOT;
        self.next_tx_slot += 1;
        self.mem.write_slice(hdr, GuestAddress(addr)).unwrap();
        self.mem
            .write_slice(frame, GuestAddress(addr + 0x100))
            .unwrap();
        [
            readable(addr, hdr.len() as u32),
            readable(addr + 0x100, frame.len() as u32),
        ]
    }

    /// Puts a frame on the TX queue, header and frame in separate descriptors as Linux does.
    fn send(&mut self, hdr: &[u8], frame: &[u8]) -> u16 {
        let bufs = self.tx_bufs(hdr, frame);
        self.submit_tx(&bufs)
    }

    fn submit_tx(&mut self, bufs: &[Buf]) -> u16 {
        let head = self.tx.add_chain(bufs);
        self.notify(1);
        head
    }

    /// Runs the event loop until the device returns a TX chain: (head, used length).
    fn next_tx(&mut self) -> (u32, u32) {
        for _ in 0..50 {
            if let Some(used) = self.tx.next_used() {
                return used;
            }
            self.event_manager.run_with_timeout(100).unwrap();
        }
        panic!("the device never completed the TX chain");
    }

    fn stats(&self) -> super::NetStats {
        self.device.lock().unwrap().stats()
    }
}

#[test]
fn config_space_holds_mac_link_status_one_pair_and_the_mtu() {
    let (tap, _host) = fake_tap();
    let device = Net::with_tap(tap, &net_config(0)).unwrap();
    let mut config = [0xffu8; 14];
    device.read_config(0, &mut config);
    assert_eq!(
        config,
        [2, 0, 0x0a, 0x58, 0, 5, 1, 0, 1, 0, 0xaa, 0x05, 0, 0],
        "mac, status LINK_UP, max_virtqueue_pairs 1, mtu 1450, then nothing"
    );
    let mut mtu = [0u8; 2];
    device.read_config(10, &mut mtu);
    assert_eq!(u16::from_le_bytes(mtu), 1450);
    assert_eq!(device.device_type(), 1);
    assert_eq!(device.queues().len(), 2);
    assert!(device.queues().iter().all(|q| q.max_size() == 256));
}

#[test]
fn offers_version_1_offloads_mac_mtu_and_event_idx_but_not_mergeable_buffers() {
    let (tap, _host) = fake_tap();
    let features = Net::with_tap(tap, &net_config(0)).unwrap().avail_features();
    for bit in [
        VIRTIO_F_VERSION_1,
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_MTU,
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_HOST_TSO6,
        VIRTIO_RING_F_EVENT_IDX,
    ] {
        assert_ne!(features & (1 << bit), 0, "feature bit {bit}");
    }
    for bit in [
        VIRTIO_NET_F_MRG_RXBUF,
        VIRTIO_NET_F_GUEST_UFO,
        VIRTIO_NET_F_HOST_UFO,
        VIRTIO_NET_F_MQ,
        VIRTIO_NET_F_CTRL_VQ,
        VIRTIO_NET_F_STATUS,
    ] {
        assert_eq!(features & (1 << bit), 0, "feature bit {bit}");
    }
}

#[test]
fn tap_offloads_follow_what_the_driver_accepted() {
    let bit = |b: u32| 1u64 << b;
    let version = bit(VIRTIO_F_VERSION_1);
    let csum = bit(VIRTIO_NET_F_GUEST_CSUM);
    let tso4 = bit(VIRTIO_NET_F_GUEST_TSO4);
    let tso6 = bit(VIRTIO_NET_F_GUEST_TSO6);
    let cases = [
        (version, 0),
        // Host-side (TX) offloads do not concern the tap's receive side.
        (
            version | bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4),
            0,
        ),
        (version | csum, libc::TUN_F_CSUM),
        (version | csum | tso4, libc::TUN_F_CSUM | libc::TUN_F_TSO4),
        (
            version | csum | tso4 | tso6,
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6,
        ),
        // TSO without checksum offload is not something the tap (or the spec) allows.
        (version | tso4 | tso6, 0),
    ];
    for (features, flags) in cases {
        assert_eq!(offload_flags(features), flags, "features {features:#x}");
        let (guest, host) = guest_with(16, Some(features));
        // Cleared when created, set at activation.
        assert_eq!(*host.offloads.lock().unwrap(), [flags]);
        assert_eq!(guest.device.lock().unwrap().offloads(), flags);
    }
    let (guest, host) = guest();
    assert_eq!(
        host.last_offloads(),
        Some(libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6)
    );
    guest.device.lock().unwrap().reset();
    assert_eq!(host.last_offloads(), Some(0));
}

#[test]
fn a_tx_frame_reaches_the_tap_with_its_header_and_interrupts() {
    let (mut g, host) = guest();
    let data = frame([0xff; 6], 1000, 1);
    let head = g.send(&tx_header(), &data);
    assert_eq!(g.next_tx(), (u32::from(head), 0));
    assert_eq!(host.recv(), Some(with_header(tx_header(), &data)));
    assert_eq!(host.recv(), None);
    let irq = g.device.lock().unwrap().interrupt();
    assert_eq!(irq.status() & IRQ_VRING, IRQ_VRING);
    assert!(irq.event().read().unwrap() >= 1);
    assert_eq!(g.stats().tx_frames, 1);
}

#[test]
fn tx_chains_may_split_the_frame_anywhere_and_hold_empty_descriptors() {
    let (mut g, host) = guest();
    let data = with_header(tx_header(), &frame([0xff; 6], 200, 2));
    g.mem
        .write_slice(&data, GuestAddress(TX_BUFS + 0x1000))
        .unwrap();
    let base = TX_BUFS + 0x1000;
    let bufs = [
        readable(base, 5),
        readable(base, 0),
        readable(base + 5, 100),
        readable(base + 105, data.len() as u32 - 105),
    ];
    g.submit_tx(&bufs);
    assert_eq!(g.next_tx().1, 0);
    assert_eq!(host.recv(), Some(data));
}

#[test]
fn an_rx_frame_reaches_the_guest_with_its_header_and_one_buffer() {
    let (mut g, host) = guest();
    g.post_rx(1, MAX_BUFFER_LEN as u32);
    g.turn();
    let data = frame(MAC, 1400, 3);
    host.send(&with_header(rx_header(), &data));
    let received = g.recv();
    assert_eq!(received.len(), VNET_HDR_LEN + data.len());
    let mut hdr = rx_header();
    hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
    assert_eq!(received[..VNET_HDR_LEN], hdr, "num_buffers is 1");
    assert_eq!(received[VNET_HDR_LEN..], data[..]);
    let irq = g.device.lock().unwrap().interrupt();
    assert_eq!(irq.status() & IRQ_VRING, IRQ_VRING);
    assert_eq!(g.stats().rx_frames, 1);
}

#[test]
fn rx_frames_spread_over_several_descriptors() {
    let (mut g, host) = guest();
    let addr = RX_BUFS;
    g.post_rx_chain(
        &[
            writable(addr, 10),
            writable(addr + 10, 0),
            writable(addr + 10, 500),
            writable(addr + 510, 4000),
        ],
        addr,
    );
    g.notify(0);
    let data = frame(MAC, 2000, 4);
    host.send(&with_header(rx_header(), &data));
    let received = g.recv();
    assert_eq!(received[VNET_HDR_LEN..], data[..]);
}

#[test]
fn without_rx_buffers_one_frame_waits_and_the_tap_is_not_read_further() {
    let (mut g, host) = guest();
    let frames: Vec<_> = (0..3).map(|i| frame(MAC, 100 + i, i as u8)).collect();
    for data in &frames {
        host.send(&with_header(rx_header(), data));
    }
    for _ in 0..3 {
        g.turn();
    }
    assert_eq!(host.reads(), 1, "only the frame that waits was read");
    assert!(g.device.lock().unwrap().has_pending_rx());
    assert_eq!(g.rx.next_used(), None);

    // The driver posts buffers and notifies: the waiting frame, then the rest, in order.
    g.post_rx(3, 2048);
    for data in &frames {
        assert_eq!(g.recv()[VNET_HDR_LEN..], data[..]);
    }
    assert_eq!(host.reads(), 3);
    assert!(!g.device.lock().unwrap().has_pending_rx());
    assert_eq!(g.stats().rx_dropped, 0);
}

#[test]
fn with_event_idx_the_device_asks_to_be_told_about_new_rx_buffers() {
    let (mut g, host) = guest();
    host.send(&with_header(rx_header(), &frame(MAC, 60, 0)));
    g.turn();
    // avail_event, after the used ring's 16 entries: the next buffer the device wants.
    let avail_event: u16 = g
        .mem
        .read_obj(GuestAddress(g.rx.used + 4 + 8 * 16))
        .unwrap();
    assert_eq!(avail_event, 0);
    g.post_rx(1, 2048);
    g.recv();
    // The device used buffer 0 without running dry afterwards: it has not asked again yet.
    host.send(&with_header(rx_header(), &frame(MAC, 60, 1)));
    g.turn();
    let avail_event: u16 = g
        .mem
        .read_obj(GuestAddress(g.rx.used + 4 + 8 * 16))
        .unwrap();
    assert_eq!(avail_event, 1);
}

#[test]
fn an_rx_frame_larger_than_the_buffer_is_dropped_and_the_buffer_kept() {
    let (mut g, host) = guest();
    g.post_rx(1, 1024);
    host.send(&with_header(rx_header(), &frame(MAC, 1500, 5)));
    let small = frame(MAC, 200, 6);
    host.send(&with_header(rx_header(), &small));
    let received = g.recv();
    assert_eq!(received[VNET_HDR_LEN..], small[..]);
    assert_eq!(g.stats().rx_dropped, 1);
    assert_eq!(g.stats().rx_frames, 1);
}

#[test]
fn unusable_rx_buffers_are_returned_empty_and_the_frame_waits_for_a_good_one() {
    let (mut g, host) = guest();
    // Read-only, outside memory, partly outside memory, too short for a header.
    let bad = [
        readable(RX_BUFS, 2048),
        writable(MEM_SIZE, 2048),
        writable(MEM_SIZE - 1024, 2048),
        writable(RX_BUFS, 8),
        writable(RX_BUFS, 0),
    ];
    for buf in bad {
        g.post_rx_chain(&[buf], RX_BUFS);
    }
    // Writable, then device-readable: not a receive buffer either.
    g.post_rx_chain(
        &[writable(RX_BUFS, 100), readable(RX_BUFS + 100, 2000)],
        RX_BUFS,
    );
    g.post_rx_chain(&[writable(RX_BUFS + 0x4000, 2048)], RX_BUFS + 0x4000);
    g.notify(0);
    let data = frame(MAC, 600, 7);
    host.send(&with_header(rx_header(), &data));
    for _ in 0..6 {
        assert_eq!(g.next_rx().1, 0);
    }
    let (head, len) = g.next_rx();
    assert_eq!(len as usize, VNET_HDR_LEN + data.len());
    let mut received = vec![0u8; data.len()];
    g.mem
        .read_slice(&mut received, GuestAddress(RX_BUFS + 0x4000 + 12))
        .unwrap();
    assert_eq!(received, data);
    // The chain of two descriptors took heads 5 and 6.
    assert_eq!(head, 7);
    assert_eq!(g.stats().rx_frames, 1);
    assert_eq!(g.stats().rx_dropped, 0);
}

#[test]
fn oversized_and_malformed_tx_chains_are_dropped_with_length_0() {
    let (mut g, host) = guest();
    let base = TX_BUFS;
    let chains: Vec<Vec<Buf>> = vec![
        // One byte more than a header and the largest frame.
        vec![
            readable(base, 12),
            readable(base, MAX_BUFFER_LEN as u32 - 11),
        ],
        vec![readable(base, u32::MAX)],
        // Outside memory, wholly and partly.
        vec![readable(MEM_SIZE + 0x1000, 64)],
        vec![readable(MEM_SIZE - 32, 64)],
        vec![readable(u64::MAX - 8, 64)],
        // A device-writable descriptor in a TX chain.
        vec![readable(base, 12), writable(base + 12, 60)],
        // Shorter than the header, or empty.
        vec![readable(base, 8)],
        vec![readable(base, 0)],
    ];
    for bufs in &chains {
        let head = g.submit_tx(bufs);
        assert_eq!(g.next_tx(), (u32::from(head), 0));
    }
    assert_eq!(host.recv(), None);
    assert_eq!(g.stats().tx_dropped, chains.len() as u64);

    // The device still works, and a frame of the largest size goes through.
    let data = frame([0xff; 6], super::device::MAX_FRAME_LEN, 8);
    g.send(&tx_header(), &data);
    g.next_tx();
    assert_eq!(host.recv(), Some(with_header(tx_header(), &data)));
}

#[test]
fn a_full_tap_drops_tx_frames_without_blocking_the_event_loop() {
    let (mut g, host) = guest_with(256, None);
    // Nobody reads the host end: the socket's buffer fills (as a tap's queue would) and sends
    // fail with EAGAIN.
    for i in 0..40 {
        g.send(&tx_header(), &frame([0xff; 6], 60_000, i));
    }
    let (done, finished) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let mut completed = 0;
        for _ in 0..50 {
            if completed == 40 {
                break;
            }
            g.event_manager.run_with_timeout(100).unwrap();
            while g.tx.next_used().is_some() {
                completed += 1;
            }
        }
        let _ = done.send(());
        g
    });
    finished
        .recv_timeout(Duration::from_secs(10))
        .expect("the event loop blocked on the full tap");
    let g = worker.join().unwrap();
    let stats = g.stats();
    assert!(stats.tx_dropped > 0, "{stats:?}");
    assert_eq!(stats.tx_frames + stats.tx_dropped, 40);
    let mut delivered = 0;
    while host.recv().is_some() {
        delivered += 1;
    }
    assert_eq!(delivered, stats.tx_frames);
}

#[test]
fn tx_work_per_event_loop_turn_is_bounded() {
    let (mut g, host) = guest_with(256, None);
    // The activation's own event first, so the TX notification below is the only one.
    g.turn();
    for i in 0..100 {
        g.send(&tx_header(), &frame([0xff; 6], 60, i));
    }
    g.turn();
    let mut completed = 0;
    while g.tx.next_used().is_some() {
        completed += 1;
    }
    assert_eq!(completed, BUDGET);
    // The rest is done at the next turns, without a new notification.
    for _ in 0..3 {
        g.turn();
    }
    while g.tx.next_used().is_some() {
        completed += 1;
    }
    assert_eq!(completed, 100);
    drop(host);
}

#[test]
fn an_avail_index_far_ahead_does_not_spin_the_event_loop() {
    let (mut g, host) = guest();
    // More than a queue's length (16) past what the device took, on both queues.
    g.rx.set_avail_idx(16 + 5);
    g.tx.set_avail_idx(16 + 5);
    host.send(&with_header(rx_header(), &frame(MAC, 60, 9)));
    g.notify(0);
    g.notify(1);
    let (done, finished) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        for _ in 0..3 {
            g.event_manager.run_with_timeout(100).unwrap();
        }
        let _ = done.send(());
        g
    });
    finished
        .recv_timeout(Duration::from_secs(10))
        .expect("the event loop is stuck on the broken queues");
    let mut g = worker.join().unwrap();
    assert_eq!(g.rx.next_used(), None);
    assert_eq!(g.tx.next_used(), None);

    // A driver that comes back to sane indexes is served again.
    g.rx.set_avail_idx(0);
    g.tx.set_avail_idx(0);
    g.post_rx(1, 2048);
    assert_eq!(g.recv().len(), VNET_HDR_LEN + 60);
    let data = frame([0xff; 6], 100, 10);
    g.send(&tx_header(), &data);
    g.next_tx();
    assert_eq!(host.recv(), Some(with_header(tx_header(), &data)));
}

#[test]
fn looping_chains_and_heads_past_the_table_do_not_hang_or_panic() {
    let (mut g, host) = guest();
    g.mem
        .write_slice(
            &with_header(tx_header(), &frame([0xff; 6], 60, 0)),
            GuestAddress(TX_BUFS),
        )
        .unwrap();
    // A descriptor whose `next` is itself: the chain ends after queue-size hops.
    g.tx.write_desc(0, TX_BUFS, 72, VRING_DESC_F_NEXT as u16, 0);
    g.tx.publish(0);
    g.notify(1);
    assert_eq!(g.next_tx(), (0, 0));
    // A head past the table cannot be returned; it is skipped.
    g.tx.publish(99);
    g.notify(1);
    g.turn();
    assert_eq!(g.tx.next_used(), None);
    // Whatever reached the host, the device still serves a good frame.
    while host.recv().is_some() {}
    let data = frame([0xff; 6], 60, 1);
    g.tx.write_desc(1, TX_BUFS + 0x1000, 72, 0, 0);
    g.mem
        .write_slice(
            &with_header(tx_header(), &data),
            GuestAddress(TX_BUFS + 0x1000),
        )
        .unwrap();
    g.tx.publish(1);
    g.notify(1);
    assert_eq!(g.next_tx(), (1, 0));
    assert_eq!(host.recv(), Some(with_header(tx_header(), &data)));
}

#[test]
fn random_descriptor_tables_never_break_the_device() {
    let (mut g, host) = guest();
    let mut rng = Rng::new(0x05ee_d0e7);
    for _ in 0..200 {
        g.tx.add_garbage(&mut rng, 4);
        g.rx.add_garbage(&mut rng, 4);
        // The socket fills up while the device holds a frame back: that is fine here.
        let data = frame(MAC, 60 + rng.below(3000) as usize, 1);
        let _ = host.peer.send(&with_header(rx_header(), &data));
        g.notify(0);
        g.notify(1);
        g.event_manager.run_with_timeout(10).unwrap();
        while g.tx.next_used().is_some() {}
        while g.rx.next_used().is_some() {}
        while host.recv().is_some() {}
    }
    // Garbage may overwrite memory the device wrote into, but never beyond the guest's RAM,
    // and nothing panicked. A fresh device state serves well-formed traffic.
    g.device.lock().unwrap().reset();
    g.rx = GuestQueue::new(&g.mem, 0x1_0000, 16);
    g.tx = GuestQueue::new(&g.mem, 0x4_0000, 16);
    g.activate(None);
    let data = frame([0xff; 6], 100, 2);
    g.send(&tx_header(), &data);
    g.next_tx();
    assert_eq!(host.recv(), Some(with_header(tx_header(), &data)));
}

#[test]
fn reset_stops_the_device_until_the_driver_starts_it_again() {
    let (mut g, host) = guest();
    // A frame waits for a buffer when the driver resets.
    host.send(&with_header(rx_header(), &frame(MAC, 60, 1)));
    g.turn();
    assert!(g.device.lock().unwrap().has_pending_rx());

    g.device.lock().unwrap().reset();
    {
        let device = g.device.lock().unwrap();
        assert!(!device.is_activated());
        assert!(!device.has_pending_rx());
        assert_eq!(device.offloads(), 0);
        assert_eq!(device.acked_features(), 0);
    }
    assert_eq!(host.last_offloads(), Some(0));
    // Nothing is read or sent while reset, whatever the guest's memory still holds.
    let reads = host.reads();
    let waiting = frame(MAC, 80, 2);
    host.send(&with_header(rx_header(), &waiting));
    g.post_rx(1, 2048);
    g.send(&tx_header(), &frame([0xff; 6], 60, 3));
    for _ in 0..3 {
        g.turn();
    }
    assert_eq!(host.reads(), reads);
    assert_eq!(g.rx.next_used(), None);
    assert_eq!(g.tx.next_used(), None);
    assert_eq!(host.recv(), None);

    // Started again with fresh rings: the frame that arrived meanwhile is delivered.
    g.rx = GuestQueue::new(&g.mem, 0x1_0000, 16);
    g.tx = GuestQueue::new(&g.mem, 0x4_0000, 16);
    g.rx_posted.clear();
    g.activate(None);
    g.post_rx(1, 2048);
    assert_eq!(g.recv()[VNET_HDR_LEN..], waiting[..]);
    let data = frame([0xff; 6], 70, 4);
    g.send(&tx_header(), &data);
    g.next_tx();
    assert_eq!(host.recv(), Some(with_header(tx_header(), &data)));
}

#[test]
fn a_bad_tap_fd_is_an_error_naming_the_field_and_is_not_closed() {
    // A descriptor number that is not open.
    let err = Net::new(3, &net_config(100_000)).err().unwrap();
    assert!(matches!(err, NetError::Tap { index: 3, .. }));
    assert!(err.to_string().contains("net[3].tap_fd 100000"), "{err}");
    let chain = crate::devices::virtio::error_chain(&err);
    assert!(chain.contains("not an open descriptor"), "{chain}");

    // An open descriptor that is not a tap stays open: it is not ours.
    let file = vmm_sys_util::tempfile::TempFile::new().unwrap();
    let fd = file.as_file().as_raw_fd();
    let err = Net::new(0, &net_config(fd)).err().unwrap();
    assert!(err.to_string().contains("net[0].tap_fd"), "{err}");
    let chain = crate::devices::virtio::error_chain(&err);
    assert!(chain.contains("not an attached tun/tap"), "{chain}");
    // SAFETY: F_GETFD takes no pointer.
    assert!(unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0);
}

mod real_tap {
    //! A real tap in a network namespace of its own, with an AF_PACKET socket on the
    //! interface: frames the guest sends arrive there, frames sent there reach the guest.

    use std::fs::OpenOptions;
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

    use super::super::tap::{IfReq, REQUIRED_FLAGS};
    use super::*;

    const NAME: &[u8] = b"rvmnet0";

    fn check(ret: libc::c_int, what: &str) {
        assert!(ret >= 0, "{what}: {}", io::Error::last_os_error());
    }

    fn ifreq(flags: i16) -> IfReq {
        let mut ifr = IfReq::new(flags);
        ifr.name[..NAME.len()].copy_from_slice(NAME);
        ifr
    }

    /// Opens the tap and brings it up; returns its descriptor and interface index.
    fn create_tap() -> (i32, libc::c_int) {
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .unwrap();
        let mut ifr = ifreq(REQUIRED_FLAGS);
        // SAFETY: TUNSETIFF reads and writes one struct ifreq.
        check(
            unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF as _, &mut ifr) },
            "TUNSETIFF",
        );
        // SAFETY: a plain socket call.
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        check(sock, "socket");
        // SAFETY: a fresh descriptor we own.
        let sock = unsafe { OwnedFd::from_raw_fd(sock) };
        let mut ifr = ifreq(0);
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write one struct ifreq.
        check(
            unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut ifr) },
            "SIOCGIFFLAGS",
        );
        ifr.flags |= libc::IFF_UP as i16;
        // SAFETY: as above.
        check(
            unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &mut ifr) },
            "SIOCSIFFLAGS",
        );
        let name = std::ffi::CString::new(NAME).unwrap();
        // SAFETY: a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(index, 0);
        (tun.into_raw_fd(), index as libc::c_int)
    }

    /// An AF_PACKET socket on the interface for our ethertype, with a 5 s receive timeout.
    fn packet_socket(ifindex: libc::c_int) -> OwnedFd {
        let proto = ETHERTYPE.to_be();
        // SAFETY: a plain socket call.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, libc::c_int::from(proto)) };
        check(fd, "socket(AF_PACKET)");
        // SAFETY: a fresh descriptor we own.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; zero is a valid value for every field.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex;
        // SAFETY: bind reads `size_of::<sockaddr_ll>()` bytes at the pointer.
        check(
            unsafe {
                libc::bind(
                    sock.as_raw_fd(),
                    &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            },
            "bind(AF_PACKET)",
        );
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: SO_RCVTIMEO reads one timeval.
        check(
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &timeout as *const libc::timeval as *const libc::c_void,
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            },
            "SO_RCVTIMEO",
        );
        sock
    }

    fn round_trip() {
        // SAFETY: unshare with CLONE_NEWNET moves only this thread to a new network namespace.
        check(unsafe { libc::unshare(libc::CLONE_NEWNET) }, "unshare");
        let (tap_fd, ifindex) = create_tap();
        let packet = packet_socket(ifindex);
        let device = Net::new(0, &net_config(tap_fd)).unwrap();
        let mut g = Guest::new(device, 16, None);
        assert_eq!(
            g.device.lock().unwrap().offloads(),
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6,
            "TUNSETOFFLOAD took the negotiated offloads"
        );

        // Guest -> tap: the kernel parses our 12-byte header and takes the frame.
        let out = frame([0xff; 6], 300, 1);
        g.send(&[0u8; VNET_HDR_LEN], &out);
        assert_eq!(g.next_tx().1, 0);
        let mut buf = vec![0u8; 2048];
        // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
        let len = unsafe {
            libc::recv(
                packet.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        assert!(
            len >= 0,
            "no frame on the tap: {}",
            io::Error::last_os_error()
        );
        assert_eq!(buf[..len as usize], out[..]);
        assert_eq!(g.stats().tx_frames, 1);

        // Tap -> guest: a frame the kernel sends out of the interface.
        g.post_rx(8, MAX_BUFFER_LEN as u32);
        let back = frame(MAC, 400, 2);
        // SAFETY: send reads `back.len()` bytes from `back`.
        let sent = unsafe {
            libc::send(
                packet.as_raw_fd(),
                back.as_ptr() as *const libc::c_void,
                back.len(),
                0,
            )
        };
        assert_eq!(sent, back.len() as isize, "{}", io::Error::last_os_error());
        // The interface coming up may have sent IPv6 chatter first: skip it.
        let received = loop {
            let received = g.recv();
            if received[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14] == ETHERTYPE.to_be_bytes() {
                break received;
            }
            g.post_rx(1, MAX_BUFFER_LEN as u32);
        };
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr[10] = 1;
        assert_eq!(received[..VNET_HDR_LEN], hdr, "plain frame, num_buffers 1");
        assert_eq!(received[VNET_HDR_LEN..], back[..]);
    }

    #[test]
    #[ignore = "needs root: creates a tap in a new network namespace"]
    fn frames_cross_a_real_tap_both_ways() {
        std::thread::spawn(round_trip).join().unwrap();
    }
}
