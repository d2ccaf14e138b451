//! The virtio-blk device: one request queue served from the event loop.

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{QueueOwnedT, QueueT};
use vmm_sys_util::epoll::EventSet;

use super::disk::DiskImage;
use super::{request, BlockDeviceConfig, BlockError};
use crate::devices::virtio::queue::{add_used, drain_event, signal_used};
use crate::devices::virtio::{read_config_bytes, VirtioCommon, VirtioDevice};
use crate::logger::guest_warn;

const QUEUE_SIZE: u16 = 256;
const REQUEST_QUEUE: usize = 0;
/// Data buffers per request: a chain also carries the header and the status byte.
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;

const TOKEN_QUEUE: u32 = 0;
const TOKEN_STATE: u32 = 1;

pub struct Block {
    common: VirtioCommon,
    disk: DiskImage,
    /// virtio_blk_config up to `seg_max`: capacity (sectors), size_max (not offered), seg_max.
    config: [u8; 16],
    /// The driver's avail index is out of range; reported once until it is sane again.
    broken_avail: bool,
}

impl Block {
    pub fn new(config: &BlockDeviceConfig) -> Result<Self, BlockError> {
        let disk = DiskImage::open(config)?;
        // Without SEG_MAX, Linux sends one data buffer per request.
        let mut features = (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_RING_F_EVENT_IDX);
        if disk.read_only() {
            features |= 1 << VIRTIO_BLK_F_RO;
        }
        let mut config = [0u8; 16];
        config[..8].copy_from_slice(&disk.sectors().to_le_bytes());
        config[12..].copy_from_slice(&SEG_MAX.to_le_bytes());
        Ok(Self {
            common: VirtioCommon::new(features, &[QUEUE_SIZE])?,
            config,
            disk,
            broken_avail: false,
        })
    }

    pub fn disk(&self) -> &DiskImage {
        &self.disk
    }

    /// Serves every available request, then re-arms notifications and checks for a late one.
    fn process_queue(&mut self) {
        let Some(mem) = self.common.mem.clone() else {
            return;
        };
        let queue = &mut self.common.queues[REQUEST_QUEUE];
        let mut served = false;
        loop {
            if let Err(e) = queue.disable_notification(&mem) {
                guest_warn!("virtio-blk: cannot disable queue notifications: {e}");
            }
            // A driver that moved avail.idx more than a queue's length past what we took is
            // broken (virtio 1.2, 2.7.13.3): virtio-queue then yields no chain while
            // `enable_notification` keeps reporting work, which would spin this thread (and the
            // vsock device that shares it). Serve nothing until the index makes sense again.
            if let Err(e @ virtio_queue::Error::InvalidAvailRingIndex) = queue.iter(&mem) {
                if !self.broken_avail {
                    log::warn!("virtio-blk: not serving the request queue: {e}");
                }
                self.broken_avail = true;
                break;
            }
            self.broken_avail = false;
            while let Some(chain) = queue.pop_descriptor_chain(&mem) {
                let head = chain.head_index();
                let len = request::process(&self.disk, &mem, chain);
                add_used(queue, &mem, head, len);
                served = true;
            }
            match queue.enable_notification(&mem) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    guest_warn!("virtio-blk: cannot re-enable queue notifications: {e}");
                    break;
                }
            }
        }
        if served {
            signal_used(queue, &mem, &self.common.interrupt);
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
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
}

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps) {
        let queue = Events::with_data(
            &self.common.queue_events[REQUEST_QUEUE],
            TOKEN_QUEUE,
            EventSet::IN,
        );
        let state = Events::with_data(&self.common.state_event, TOKEN_STATE, EventSet::IN);
        for events in [queue, state] {
            if let Err(e) = ops.add(events) {
                log::error!("virtio-blk: cannot register with the event loop: {e:?}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            TOKEN_QUEUE => drain_event(&self.common.queue_events[REQUEST_QUEUE], "queue"),
            TOKEN_STATE => drain_event(&self.common.state_event, "state"),
            other => {
                log::warn!("virtio-blk: unexpected event token {other}");
                return;
            }
        }
        // Requests the driver queued before activation are served as soon as it completes.
        if self.is_activated() {
            self.process_queue();
        }
    }
}
