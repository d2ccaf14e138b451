//! A hostile virtio driver: guest memory, queues laid out in it, and operations taken from the
//! fuzz input that write descriptors, avail rings and buffer contents anywhere, publish any
//! head and notify any queue. Devices run in a real event loop, as in the VMM.

use std::sync::{Arc, Mutex};

use event_manager::{MutEventSubscriber, SubscriberOps};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};
use vmm::devices::virtio::VirtioDevice;
use vmm::{EventManager, GuestMemory};

use crate::input::Input;

/// Guest RAM: 128 KiB at 0, small so that addresses from the input often land in it.
pub const MEM_SIZE: u64 = 0x2_0000;
/// Buffers live from here to the end of memory; the rings below.
pub const DATA: u64 = 0x1_0000;
/// Event-loop turns after which a run counts as a device that never goes idle.
const MAX_TURNS: usize = 10_000;

pub const OP_DESC: u8 = 0;
pub const OP_PUBLISH: u8 = 1;
pub const OP_WRITE: u8 = 2;
pub const OP_NOTIFY: u8 = 3;
pub const OP_AVAIL_IDX: u8 = 4;
/// 5: used_event and avail.flags (EVENT_IDX and interrupt suppression).
/// Driver operations; device-specific ones are numbered from here.
pub const DRIVER_OPS: u8 = 6;

/// Where queue `index` lives: descriptor table, then avail ring, then used ring, 4 KiB each.
pub fn queue_layout(index: usize) -> (u64, u64, u64) {
    let base = 0x1000 + 0x3000 * index as u64;
    (base, base + 0x1000, base + 0x2000)
}

/// A queue as the driver programmed it.
#[derive(Clone, Copy, Default)]
struct DriverQueue {
    size: u16,
    avail_idx: u16,
}

pub struct Driver {
    pub mem: GuestMemory,
    zeroes: Vec<u8>,
    queues: Vec<DriverQueue>,
}

impl Default for Driver {
    fn default() -> Self {
        Self::new()
    }
}

impl Driver {
    pub fn new() -> Self {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)])
            .expect("128 KiB of anonymous guest memory");
        Self {
            mem,
            zeroes: vec![0; MEM_SIZE as usize],
            queues: Vec::new(),
        }
    }

    /// Resets the device, clears memory and brings the device up again with the features and
    /// queue sizes the input picks. Activation may fail; the run goes on regardless.
    pub fn start(&mut self, device: &mut dyn VirtioDevice, input: &mut Input) {
        device.reset();
        self.clear();
        // Zero input accepts every offered feature.
        let refused = input.u64();
        let features = device.avail_features() & !refused | 1 << VIRTIO_F_VERSION_1;
        device.set_acked_features(features);
        self.queues.clear();
        for (index, queue) in device.queues_mut().iter_mut().enumerate() {
            let size = match input.u8() % 10 {
                0 => 16,
                9 => input.u16(),
                log => 1 << (log - 1),
            };
            let (desc, avail, used) = queue_layout(index);
            queue.set_size(size);
            queue.set_desc_table_address(Some(desc as u32), Some(0));
            queue.set_avail_ring_address(Some(avail as u32), Some(0));
            queue.set_used_ring_address(Some(used as u32), Some(0));
            queue.set_ready(true);
            self.queues.push(DriverQueue {
                size: queue.size(),
                avail_idx: 0,
            });
        }
        let _ = device.activate(self.mem.clone());
    }

    pub fn clear(&self) {
        self.mem
            .write_slice(&self.zeroes, GuestAddress(0))
            .expect("guest memory is MEM_SIZE bytes");
    }

    fn write<T: vm_memory::ByteValued>(&self, value: T, addr: u64) {
        // Writes the input aims outside memory are simply lost.
        let _ = self.mem.write_obj(value, GuestAddress(addr));
    }

    /// Runs one driver operation (`op` < DRIVER_OPS). Returns the queue to notify, if any.
    pub fn op(&mut self, op: u8, input: &mut Input) -> Option<usize> {
        let count = self.queues.len().max(1);
        let index = usize::from(input.u8()) % count;
        let queue = self.queues.get(index).copied().unwrap_or_default();
        let size = queue.size.max(1);
        let (desc, avail, _) = queue_layout(index);
        match op {
            OP_DESC => {
                let slot = input.u16() % size;
                let addr = match input.u8() % 4 {
                    0 => DATA + u64::from(input.u16()),
                    1 => input.u64(),
                    2 => u64::from(input.u16()) % DATA,
                    _ => MEM_SIZE - u64::from(input.u8()),
                };
                let len = match input.u8() % 2 {
                    0 => u32::from(input.u16()),
                    _ => input.u32(),
                };
                let flags = input.u16();
                let next = input.u16();
                let at = desc + 16 * u64::from(slot);
                self.write(addr, at);
                self.write(len, at + 8);
                self.write(flags, at + 12);
                self.write(next, at + 14);
            }
            OP_PUBLISH => {
                let head = input.u16();
                let slot = avail + 4 + 2 * u64::from(queue.avail_idx % size);
                self.write(head, slot);
                let idx = queue.avail_idx.wrapping_add(1);
                self.write(idx, avail + 2);
                if let Some(q) = self.queues.get_mut(index) {
                    q.avail_idx = idx;
                }
            }
            OP_WRITE => {
                let offset = u64::from(input.u16());
                let len = usize::from(input.u8());
                let bytes = input.bytes(len);
                let _ = self.mem.write_slice(bytes, GuestAddress(DATA + offset));
            }
            OP_NOTIFY => return Some(index),
            OP_AVAIL_IDX => {
                let idx = input.u16();
                self.write(idx, avail + 2);
                if let Some(q) = self.queues.get_mut(index) {
                    q.avail_idx = idx;
                }
            }
            _ => {
                // used_event sits right after the avail ring; avail.flags asks for no interrupts.
                let used_event = input.u16();
                let flags = input.u16();
                self.write(used_event, avail + 4 + 2 * u64::from(size));
                self.write(flags, avail);
            }
        }
        None
    }
}

/// A device registered with its own event loop.
pub struct Looped<D> {
    pub device: Arc<Mutex<D>>,
    pub event_manager: EventManager,
}

impl<D: VirtioDevice + MutEventSubscriber + 'static> Looped<D> {
    pub fn new(device: D) -> Self {
        let device = Arc::new(Mutex::new(device));
        let mut event_manager = EventManager::new().expect("an epoll event loop");
        event_manager.add_subscriber(device.clone());
        Self {
            device,
            event_manager,
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, D> {
        self.device.lock().expect("device lock poisoned")
    }

    /// What the guest's QueueNotify write does through the ioeventfd.
    pub fn kick(&self, queue: usize) {
        if let Some(event) = self.lock().queue_events().get(queue) {
            event.write(1).expect("queue eventfd write");
        }
    }

    /// A notification, then the loop's work.
    pub fn notify(&mut self, queue: usize) {
        self.kick(queue);
        self.settle();
    }

    /// Runs the event loop until nothing is ready. A device that keeps it busy forever would
    /// stall the VMM thread it shares with other devices: that is a finding.
    pub fn settle(&mut self) {
        settle(&mut self.event_manager);
    }
}

pub fn settle(event_manager: &mut EventManager) {
    for _ in 0..MAX_TURNS {
        match event_manager.run_with_timeout(0) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => panic!("event loop failed: {e:?}"),
        }
    }
    panic!("the event loop never went idle after {MAX_TURNS} turns");
}
