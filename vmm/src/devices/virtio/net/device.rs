//! The virtio-net device: an RX and a TX queue served from the event loop together with the tap.
//!
//! Everything in the queues is guest-controlled. A chain the device cannot use is returned with
//! used length 0 and its frame dropped; each kind of defect is logged once per device, and
//! counted in [`NetStats`].

use std::io;
use std::ops::Deref;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU,
    VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemoryBackend};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::tap::{Tap, TapIo};
use super::{NetDeviceConfig, NetError};
use crate::devices::virtio::queue::{add_used, drain_event, signal_used};
use crate::devices::virtio::{
    read_config_bytes, ActivateError, VirtioCommon, VirtioDevice, VirtioError,
};
use crate::logger::guest_warn;
use crate::GuestMemory;

const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;

/// struct virtio_net_hdr_v1 (with `num_buffers`), the header of every frame on both sides.
pub const VNET_HDR_LEN: usize = 12;
/// The largest frame (without header) either direction carries: a 64 KiB GSO frame and its
/// Ethernet header, as Firecracker sizes it.
pub const MAX_FRAME_LEN: usize = 65550;
pub const MAX_BUFFER_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;
/// Frames moved per direction per event-loop turn, so a busy tap or TX queue cannot starve the
/// other devices on the event thread; the rest is picked up at the next turn.
pub const BUDGET: usize = 64;

/// virtio_net_config up to `mtu`: mac, status, max_virtqueue_pairs, mtu.
const CONFIG_LEN: usize = 12;

const TOKEN_RX: u32 = 0;
const TOKEN_TX: u32 = 1;
const TOKEN_STATE: u32 = 2;
const TOKEN_TAP: u32 = 3;
const TOKEN_MORE: u32 = 4;

/// Frame counters since the device was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub rx_frames: u64,
    pub rx_dropped: u64,
    pub tx_frames: u64,
    pub tx_dropped: u64,
}

/// Conditions logged once per device.
#[derive(Clone, Copy)]
enum Warning {
    TxBadChain,
    TxTapFull,
    TxTapError,
    RxBadChain,
    RxTooLong,
    RxShortFrame,
    RxTapError,
}

#[derive(Default)]
struct Warnings(u32);

impl Warnings {
    /// True the first time `warning` is seen.
    fn first(&mut self, warning: Warning) -> bool {
        let bit = 1 << warning as u32;
        let first = self.0 & bit == 0;
        self.0 |= bit;
        first
    }
}

#[derive(Debug, thiserror::Error)]
enum ChainError {
    #[error("a device-writable descriptor in a TX chain")]
    WriteOnly,
    #[error("a device-readable descriptor in an RX chain")]
    ReadOnly,
    #[error("descriptor {addr:#x}+{len:#x} lies outside guest memory")]
    OutsideMemory { addr: u64, len: u32 },
    #[error("the chain holds more than {MAX_BUFFER_LEN} bytes")]
    TooLong,
    #[error("the chain holds {0} bytes, less than a {VNET_HDR_LEN}-byte header")]
    TooShort(usize),
    #[error("a frame of {frame} bytes does not fit a buffer of {room} bytes")]
    DoesNotFit { frame: usize, room: usize },
}

pub struct Net<T: TapIo = Tap> {
    common: VirtioCommon,
    config: [u8; CONFIG_LEN],
    tap: T,
    /// TUN_F_* flags last set on the tap.
    offloads: u32,
    rx_buf: Box<[u8]>,
    /// Length of the frame in `rx_buf` that waits for an RX buffer from the guest. While one
    /// waits the tap is not read, so the tap's queue (not the VMM) holds the backlog.
    rx_pending: Option<usize>,
    /// The tap may have frames we have not read: it is registered edge-triggered, so this is
    /// only cleared when a read finds it empty.
    tap_readable: bool,
    tx_buf: Box<[u8]>,
    /// The TX queue may hold chains not yet taken.
    tx_pending: bool,
    /// Written to come back to work left over when a budget ran out.
    more: EventFd,
    /// The driver's avail index of a queue is out of range; reported once until it is sane.
    broken_avail: [bool; 2],
    warnings: Warnings,
    stats: NetStats,
}

impl Net<Tap> {
    /// The device for `net[index]` of the configuration, owning its tap descriptor.
    pub fn new(index: usize, config: &NetDeviceConfig) -> Result<Self, NetError> {
        let tap = Tap::from_inherited_fd(config.tap_fd).map_err(|source| NetError::Tap {
            index,
            fd: config.tap_fd,
            source,
        })?;
        Ok(Self::with_tap(tap, config)?)
    }
}

impl<T: TapIo> Net<T> {
    /// The device over an already prepared tap (or a stand-in for one).
    pub fn with_tap(tap: T, config: &NetDeviceConfig) -> Result<Self, VirtioError> {
        let features = [
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_MTU,
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_RING_F_EVENT_IDX,
        ]
        .iter()
        .fold(0u64, |features, bit| features | 1 << bit);
        let mut cfg = [0u8; CONFIG_LEN];
        cfg[..6].copy_from_slice(&config.mac.0);
        cfg[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        cfg[8..10].copy_from_slice(&1u16.to_le_bytes());
        cfg[10..12].copy_from_slice(&config.mtu.to_le_bytes());
        Ok(Self {
            common: VirtioCommon::new(features, &[QUEUE_SIZE, QUEUE_SIZE])?,
            config: cfg,
            tap,
            offloads: 0,
            rx_buf: vec![0; MAX_BUFFER_LEN].into_boxed_slice(),
            rx_pending: None,
            tap_readable: false,
            tx_buf: vec![0; MAX_BUFFER_LEN].into_boxed_slice(),
            tx_pending: false,
            more: EventFd::new(EFD_NONBLOCK).map_err(VirtioError::EventFd)?,
            broken_avail: [false; 2],
            warnings: Warnings::default(),
            stats: NetStats::default(),
        })
    }

    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// TUN_F_* flags last set on the tap.
    pub fn offloads(&self) -> u32 {
        self.offloads
    }

    pub fn tap(&self) -> &T {
        &self.tap
    }

    /// Whether a frame read from the tap waits for an RX buffer.
    pub fn has_pending_rx(&self) -> bool {
        self.rx_pending.is_some()
    }

    fn set_offloads(&mut self, flags: u32) {
        match self.tap.set_offload(flags) {
            Ok(()) => self.offloads = flags,
            // The tap then hands over fully checksummed, unsegmented frames, which every
            // driver accepts.
            Err(e) => log::warn!("virtio-net: cannot set the tap's offloads to {flags:#x}: {e}"),
        }
    }

    /// Takes TX chains (at most BUDGET) and writes their frames to the tap. Returns whether
    /// chains may be left.
    fn process_tx(&mut self, mem: &GuestMemory) -> bool {
        let queue = &mut self.common.queues[TX];
        let mut budget = BUDGET;
        let mut used = false;
        let mut more = false;
        loop {
            if let Err(e) = queue.disable_notification(mem) {
                guest_warn!("virtio-net: cannot disable TX queue notifications: {e}");
            }
            if avail_is_broken(queue, mem, &mut self.broken_avail[TX], "TX") {
                break;
            }
            while budget > 0 {
                let Some(chain) = queue.pop_descriptor_chain(mem) else {
                    break;
                };
                budget -= 1;
                let head = chain.head_index();
                match gather(mem, chain, &mut self.tx_buf) {
                    Ok(len) => transmit(
                        &mut self.tap,
                        &self.tx_buf[..len],
                        &mut self.stats,
                        &mut self.warnings,
                    ),
                    Err(e) => {
                        self.stats.tx_dropped += 1;
                        if self.warnings.first(Warning::TxBadChain) {
                            log::warn!("virtio-net: dropping TX chain {head} (reported once): {e}");
                        }
                    }
                }
                add_used(queue, mem, head, 0);
                used = true;
            }
            if budget == 0 {
                more = true;
                break;
            }
            match queue.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    guest_warn!("virtio-net: cannot re-enable TX queue notifications: {e}");
                    break;
                }
            }
        }
        if used {
            signal_used(queue, mem, &self.common.interrupt);
        }
        more
    }

    /// Reads frames from the tap (at most BUDGET) into RX chains. A frame that finds no chain
    /// stays pending and the tap is not read until the driver posts buffers. Returns whether
    /// work may be left.
    fn process_rx(&mut self, mem: &GuestMemory) -> bool {
        let mut frames = 0;
        let mut chains = 0;
        let mut used = false;
        let mut more = false;
        loop {
            let len = match self.rx_pending {
                Some(len) => len,
                None => {
                    if !self.tap_readable {
                        break;
                    }
                    if frames == BUDGET {
                        more = true;
                        break;
                    }
                    frames += 1;
                    match self.read_frame() {
                        Some(len) => len,
                        None => continue,
                    }
                }
            };
            self.rx_pending = Some(len);
            // Bad chains are consumed without taking a frame: bound them too.
            if chains == usize::from(QUEUE_SIZE) {
                more = true;
                break;
            }
            let queue = &mut self.common.queues[RX];
            if avail_is_broken(queue, mem, &mut self.broken_avail[RX], "RX") {
                break;
            }
            let chain = match queue.pop_descriptor_chain(mem) {
                Some(chain) => chain,
                // Out of buffers: ask to be told when the driver posts more (with EVENT_IDX
                // this writes avail_event), and look once more in case it just did.
                None => match queue.enable_notification(mem) {
                    Ok(true) => match queue.pop_descriptor_chain(mem) {
                        Some(chain) => chain,
                        None => break,
                    },
                    Ok(false) => break,
                    Err(e) => {
                        guest_warn!("virtio-net: cannot enable RX queue notifications: {e}");
                        break;
                    }
                },
            };
            chains += 1;
            let head = chain.head_index();
            match deliver(mem, chain, &self.rx_buf[..len]) {
                Ok(written) => {
                    add_used(queue, mem, head, written);
                    used = true;
                    self.rx_pending = None;
                    self.stats.rx_frames += 1;
                }
                Err(e @ ChainError::DoesNotFit { .. }) => {
                    // The buffer is fine, the frame is too big for what this driver posts:
                    // drop the frame, keep the buffer for the next one.
                    queue.go_to_previous_position();
                    self.rx_pending = None;
                    self.stats.rx_dropped += 1;
                    if self.warnings.first(Warning::RxTooLong) {
                        log::warn!("virtio-net: dropping a received frame (reported once): {e}");
                    }
                }
                Err(e) => {
                    // Unusable buffer: return it empty; the frame waits for the next one.
                    add_used(queue, mem, head, 0);
                    used = true;
                    if self.warnings.first(Warning::RxBadChain) {
                        log::warn!(
                            "virtio-net: returning RX chain {head} unused (reported once): {e}"
                        );
                    }
                }
            }
        }
        if used {
            signal_used(&mut self.common.queues[RX], mem, &self.common.interrupt);
        }
        more
    }

    /// Reads one frame into `rx_buf`; None when there is none to deliver (the tap is empty,
    /// failed, or gave a runt, which is dropped).
    fn read_frame(&mut self) -> Option<usize> {
        match self.tap.read_frame(&mut self.rx_buf) {
            Ok(len) if len >= VNET_HDR_LEN => {
                // Without VIRTIO_NET_F_MRG_RXBUF every frame takes one buffer (virtio 1.2,
                // 5.1.6.4); the tap leaves these two bytes as they were.
                self.rx_buf[10..12].copy_from_slice(&1u16.to_le_bytes());
                Some(len)
            }
            Ok(0) => {
                self.tap_readable = false;
                if self.warnings.first(Warning::RxTapError) {
                    log::warn!("virtio-net: the tap reports end of file (reported once)");
                }
                None
            }
            Ok(len) => {
                self.stats.rx_dropped += 1;
                if self.warnings.first(Warning::RxShortFrame) {
                    log::warn!(
                        "virtio-net: dropping a {len}-byte frame from the tap, shorter than its \
                         header (reported once)"
                    );
                }
                None
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => {
                self.tap_readable = false;
                if e.kind() != io::ErrorKind::WouldBlock && self.warnings.first(Warning::RxTapError)
                {
                    log::warn!("virtio-net: cannot read the tap (reported once): {e}");
                }
                None
            }
        }
    }

    fn run_queues(&mut self) {
        let Some(mem) = self.common.mem.clone() else {
            return;
        };
        let mut more = self.process_rx(&mem);
        if self.tx_pending {
            self.tx_pending = self.process_tx(&mem);
            more |= self.tx_pending;
        }
        if more {
            if let Err(e) = self.more.write(1) {
                log::error!("virtio-net: cannot schedule the remaining work: {e}");
            }
        }
    }
}

/// True while the driver's avail index is more than a queue's length ahead of the device
/// (virtio 1.2, 2.7.13.3): virtio-queue then yields no chain while `enable_notification` keeps
/// reporting work, which would spin the event thread. Nothing is served until it is sane.
fn avail_is_broken(queue: &mut Queue, mem: &GuestMemory, broken: &mut bool, name: &str) -> bool {
    if let Err(e @ virtio_queue::Error::InvalidAvailRingIndex) = queue.iter(mem) {
        if !*broken {
            log::warn!("virtio-net: not serving the {name} queue: {e}");
        }
        *broken = true;
        return true;
    }
    *broken = false;
    false
}

/// Copies the readable descriptors of a TX chain (header and frame) into `buf`.
fn gather<M>(
    mem: &GuestMemory,
    chain: DescriptorChain<M>,
    buf: &mut [u8],
) -> Result<usize, ChainError>
where
    M: Deref,
    M::Target: vm_memory::GuestMemory + Sized,
{
    let mut len = 0;
    for desc in chain {
        if desc.is_write_only() {
            return Err(ChainError::WriteOnly);
        }
        let end = len + desc.len() as usize;
        let dst = buf.get_mut(len..end).ok_or(ChainError::TooLong)?;
        mem.read_slice(dst, desc.addr())
            .map_err(|_| ChainError::OutsideMemory {
                addr: desc.addr().0,
                len: desc.len(),
            })?;
        len = end;
    }
    if len < VNET_HDR_LEN {
        return Err(ChainError::TooShort(len));
    }
    Ok(len)
}

/// Writes one frame to the tap; a full tap or a refused frame drops it.
fn transmit<T: TapIo>(tap: &mut T, frame: &[u8], stats: &mut NetStats, warnings: &mut Warnings) {
    match tap.write_frame(frame) {
        Ok(_) => stats.tx_frames += 1,
        Err(e) => {
            stats.tx_dropped += 1;
            let full =
                e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS);
            let warning = if full {
                Warning::TxTapFull
            } else {
                Warning::TxTapError
            };
            if warnings.first(warning) {
                log::warn!(
                    "virtio-net: dropping a frame the tap did not take (reported once): {e}"
                );
            }
        }
    }
}

/// Copies a header-prefixed frame into the writable descriptors of an RX chain; returns the
/// used length. The chain is checked whole before anything is written.
fn deliver<M>(mem: &GuestMemory, chain: DescriptorChain<M>, frame: &[u8]) -> Result<u32, ChainError>
where
    M: Deref + Clone,
    M::Target: vm_memory::GuestMemory + Sized,
{
    let mut room = 0usize;
    for desc in chain.clone() {
        if !desc.is_write_only() {
            return Err(ChainError::ReadOnly);
        }
        let outside = ChainError::OutsideMemory {
            addr: desc.addr().0,
            len: desc.len(),
        };
        if !mem.check_range(desc.addr(), desc.len() as usize) {
            return Err(outside);
        }
        room += desc.len() as usize;
    }
    if room < VNET_HDR_LEN {
        return Err(ChainError::TooShort(room));
    }
    if room < frame.len() {
        return Err(ChainError::DoesNotFit {
            frame: frame.len(),
            room,
        });
    }
    let mut written = 0;
    for desc in chain {
        if written == frame.len() {
            break;
        }
        let len = (desc.len() as usize).min(frame.len() - written);
        // The driver may have rewritten the table since the check above.
        mem.write_slice(&frame[written..written + len], desc.addr())
            .map_err(|_| ChainError::OutsideMemory {
                addr: desc.addr().0,
                len: desc.len(),
            })?;
        written += len;
    }
    if written < frame.len() {
        return Err(ChainError::DoesNotFit {
            frame: frame.len(),
            room: written,
        });
    }
    // MAX_BUFFER_LEN fits in a u32.
    Ok(written as u32)
}

/// The tap offloads (TUN_F_*) matching the receive features the driver accepted. TSO needs
/// checksum offload on both sides (the kernel refuses TSO without TUN_F_CSUM).
pub fn offload_flags(acked_features: u64) -> u32 {
    let acked = |bit: u32| acked_features & (1u64 << bit) != 0;
    if !acked(VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut flags = libc::TUN_F_CSUM;
    if acked(VIRTIO_NET_F_GUEST_TSO4) {
        flags |= libc::TUN_F_TSO4;
    }
    if acked(VIRTIO_NET_F_GUEST_TSO6) {
        flags |= libc::TUN_F_TSO6;
    }
    flags
}

impl<T: TapIo> VirtioDevice for Net<T> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }
    fn common(&self) -> &VirtioCommon {
        &self.common
    }
    fn common_mut(&mut self) -> &mut VirtioCommon {
        &mut self.common
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    fn activate(&mut self, mem: GuestMemory) -> Result<(), ActivateError> {
        self.common.activate(mem)?;
        self.set_offloads(offload_flags(self.common.acked_features));
        Ok(())
    }
    fn reset(&mut self) {
        self.common.reset();
        self.rx_pending = None;
        self.tx_pending = false;
        self.set_offloads(0);
    }
}

impl<T: TapIo> MutEventSubscriber for Net<T> {
    fn init(&mut self, ops: &mut EventOps) {
        let queues = &self.common.queue_events;
        let sources = [
            Events::with_data(&queues[RX], TOKEN_RX, EventSet::IN),
            Events::with_data(&queues[TX], TOKEN_TX, EventSet::IN),
            Events::with_data(&self.common.state_event, TOKEN_STATE, EventSet::IN),
            Events::with_data(
                &self.tap,
                TOKEN_TAP,
                EventSet::IN | EventSet::EDGE_TRIGGERED,
            ),
            Events::with_data(&self.more, TOKEN_MORE, EventSet::IN),
        ];
        for events in sources {
            if let Err(e) = ops.add(events) {
                log::error!("virtio-net: cannot register with the event loop: {e:?}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let queues = &self.common.queue_events;
        match events.data() {
            // New RX buffers: run_queues below fills them.
            TOKEN_RX => drain_event(&queues[RX], "RX queue"),
            TOKEN_TX => {
                drain_event(&queues[TX], "TX queue");
                self.tx_pending = true;
            }
            TOKEN_STATE => {
                drain_event(&self.common.state_event, "state");
                // The driver may have queued TX frames before DRIVER_OK.
                self.tx_pending = true;
            }
            // Readable, or an error/hang-up that the next read reports.
            TOKEN_TAP => self.tap_readable = true,
            TOKEN_MORE => drain_event(&self.more, "net work"),
            other => {
                log::warn!("virtio-net: unexpected event token {other}");
                return;
            }
        }
        if self.is_activated() {
            self.run_queues();
        }
    }
}
