//! The virtio-vsock device: RX, TX and event queues, served from the event loop together with
//! the host sockets of its muxer.

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
use virtio_queue::QueueOwnedT;
use virtio_queue::QueueT;
use vmm_sys_util::epoll::EventSet;

use super::muxer::{Muxer, TOKEN_STREAM};
use super::packet::{read_tx_packet, RxBuffer, HOST_CID, MAX_PAYLOAD};
use super::{VsockDeviceConfig, VsockError};
use crate::devices::virtio::queue::{add_used, drain_event, signal_used};
use crate::devices::virtio::{read_config_bytes, VirtioCommon, VirtioDevice};
use crate::logger::guest_warn;
use crate::GuestMemory;

const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
const EVENT: usize = 2;

const TOKEN_RX: u32 = 0;
const TOKEN_TX: u32 = 1;
const TOKEN_EVENT: u32 = 2;
const TOKEN_STATE: u32 = 3;
const TOKEN_LISTENER: u32 = 4;

pub struct Vsock {
    common: VirtioCommon,
    /// virtio_vsock_config: the guest CID as a little-endian u64.
    config: [u8; 8],
    muxer: Muxer,
    tx_payload: Vec<u8>,
    rx_payload: Vec<u8>,
    /// The TX queue may hold packets not yet taken (they wait while RX is backlogged).
    tx_pending: bool,
    /// The driver reset the device; connections go at the next event-loop turn.
    teardown_pending: bool,
}

impl Vsock {
    pub fn new(config: &VsockDeviceConfig) -> Result<Self, VsockError> {
        // The device's config space holds a 64-bit CID; Linux CIDs are 32-bit.
        let cid = u64::from(config.guest_cid);
        if cid <= HOST_CID || cid >= u64::from(u32::MAX) {
            return Err(VsockError::InvalidCid(cid));
        }
        let common = VirtioCommon::new(0, &[QUEUE_SIZE; 3])?;
        let muxer = Muxer::new(cid, &config.uds_path)?;
        Ok(Self {
            common,
            config: cid.to_le_bytes(),
            muxer,
            tx_payload: vec![0; MAX_PAYLOAD],
            rx_payload: vec![0; MAX_PAYLOAD],
            tx_pending: false,
            teardown_pending: false,
        })
    }

    #[cfg(test)]
    pub(crate) fn connection_count(&self) -> usize {
        self.muxer.connection_count()
    }

    /// Takes packets off the TX queue until it is empty or RX is too backlogged to answer.
    fn process_tx(&mut self, mem: &GuestMemory) {
        let queue = &mut self.common.queues[TX];
        let mut used = false;
        self.tx_pending = false;
        while !self.muxer.backlogged() {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            match read_tx_packet(mem, chain, &mut self.tx_payload) {
                Ok(header) => {
                    let len = header.len as usize;
                    self.muxer
                        .handle_guest_packet(&header, &self.tx_payload[..len]);
                }
                Err(e) => guest_warn!(
                    "vsock: dropping TX packet {head}: {:#}",
                    anyhow::Error::from(e)
                ),
            }
            add_used(queue, mem, head, 0);
            used = true;
        }
        if self.muxer.backlogged() {
            self.tx_pending = true;
        }
        if used {
            signal_used(queue, mem, &self.common.interrupt);
        }
    }

    /// Fills RX buffers with whatever the muxer has for the guest.
    fn process_rx(&mut self, mem: &GuestMemory) {
        let queue = &mut self.common.queues[RX];
        let mut used = false;
        while self.muxer.has_rx() {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let buffer = match RxBuffer::new(mem, chain) {
                Ok(buffer) => buffer,
                Err(e) => {
                    guest_warn!(
                        "vsock: unusable RX buffer {head}: {:#}",
                        anyhow::Error::from(e)
                    );
                    add_used(queue, mem, head, 0);
                    used = true;
                    continue;
                }
            };
            // A buffer with no room past the header carries control packets only; for data it
            // is returned empty, as one too small for a header is. Asking the muxer anyway skips
            // the host read and re-arms a socket that still has data: the event loop would spin
            // for as long as the guest leaves the buffer there (found by fuzzing).
            if buffer.payload_room() == 0 && !self.muxer.has_control() {
                guest_warn!("vsock: RX buffer {head} has no room for data, returned empty");
                add_used(queue, mem, head, 0);
                used = true;
                continue;
            }
            let payload = &mut self.rx_payload[..buffer.payload_room()];
            let Some(header) = self.muxer.next_rx_packet(payload) else {
                // Nothing after all (the host sockets were dry): keep the buffer for later.
                queue.go_to_previous_position();
                break;
            };
            let len = match buffer.write(&header, &payload[..header.len as usize]) {
                Ok(len) => len,
                Err(e) => {
                    guest_warn!(
                        "vsock: cannot write RX buffer {head}: {:#}",
                        anyhow::Error::from(e)
                    );
                    0
                }
            };
            add_used(queue, mem, head, len);
            used = true;
        }
        if used {
            signal_used(queue, mem, &self.common.interrupt);
        }
    }

    fn run_queues(&mut self) {
        let Some(mem) = self.common.mem.clone() else {
            return;
        };
        loop {
            if self.tx_pending {
                self.process_tx(&mem);
            }
            self.process_rx(&mem);
            // Delivering RX may have made room for the TX work that was held back.
            if !self.tx_pending || self.muxer.backlogged() {
                break;
            }
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
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
    fn reset(&mut self) {
        self.common.reset();
        self.teardown_pending = true;
    }
}

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps) {
        let queues = &self.common.queue_events;
        let sources = [
            Events::with_data(&queues[RX], TOKEN_RX, EventSet::IN),
            Events::with_data(&queues[TX], TOKEN_TX, EventSet::IN),
            Events::with_data(&queues[EVENT], TOKEN_EVENT, EventSet::IN),
            Events::with_data(&self.common.state_event, TOKEN_STATE, EventSet::IN),
            Events::with_data(self.muxer.listener(), TOKEN_LISTENER, EventSet::IN),
        ];
        for events in sources {
            if let Err(e) = ops.add(events) {
                log::error!("vsock: cannot register with the event loop: {e:?}");
            }
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if self.teardown_pending {
            self.teardown_pending = false;
            self.tx_pending = false;
            self.muxer.reset();
        }
        let queues = &self.common.queue_events;
        match events.data() {
            // New RX buffers: run_queues below fills them.
            TOKEN_RX => drain_event(&queues[RX], "RX queue"),
            TOKEN_TX => {
                drain_event(&queues[TX], "TX queue");
                self.tx_pending = true;
            }
            // The device never posts events (only transport resets, which we do not do).
            TOKEN_EVENT => drain_event(&queues[EVENT], "event queue"),
            TOKEN_STATE => {
                drain_event(&self.common.state_event, "state");
                // The driver may have queued TX packets before DRIVER_OK.
                self.tx_pending = true;
            }
            TOKEN_LISTENER => self.muxer.accept_clients(),
            TOKEN_STREAM => self
                .muxer
                .handle_stream_event(events.fd(), events.event_set()),
            other => log::warn!("vsock: unexpected event token {other}"),
        }
        if self.is_activated() {
            self.run_queues();
        }
        self.muxer.sync_events(ops);
    }
}
