//! Test support: guest memory, a minimal device, and a guest-side virtqueue driver that writes
//! descriptor tables and avail rings into real guest memory and reads the used ring back.

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::{read_config_bytes, VirtioCommon, VirtioDevice};
use crate::GuestMemory;

/// Guest RAM used by the tests: 16 MiB at guest address 0.
pub const MEM_SIZE: u64 = 0x100_0000;

pub fn guest_memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

/// A device with two 16-entry queues and an 8-byte writable config space.
pub struct TestDevice {
    common: VirtioCommon,
    pub config: [u8; 8],
    pub resets: usize,
}

impl TestDevice {
    pub const TYPE: u32 = 42;
    pub const CONFIG: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

    pub fn new() -> Self {
        Self {
            common: VirtioCommon::new(1 << 3, &[16, 16]).unwrap(),
            config: Self::CONFIG,
            resets: 0,
        }
    }
}

impl VirtioDevice for TestDevice {
    fn device_type(&self) -> u32 {
        Self::TYPE
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
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let start = offset as usize;
        if let Some(dst) = self.config.get_mut(start..start + data.len()) {
            dst.copy_from_slice(data);
        }
    }
    fn reset(&mut self) {
        self.resets += 1;
        self.common.reset();
    }
}

/// One buffer of a chain as the driver describes it.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

pub fn readable(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        writable: false,
    }
}

pub fn writable(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        writable: true,
    }
}

/// The guest driver's view of one split virtqueue laid out at `base`: descriptor table at
/// `base`, avail ring at `base + 0x1000`, used ring at `base + 0x2000`.
pub struct GuestQueue {
    mem: GuestMemory,
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl GuestQueue {
    pub fn new(mem: &GuestMemory, base: u64, size: u16) -> Self {
        let queue = Self {
            mem: mem.clone(),
            size,
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        };
        queue.write_u16(queue.avail, 0);
        queue.write_u16(queue.avail + 2, 0);
        queue.write_u16(queue.used + 2, 0);
        queue
    }

    fn write_u16(&self, addr: u64, value: u16) {
        self.mem.write_obj(value, GuestAddress(addr)).unwrap();
    }

    /// Programs a device-side queue the way the transport would after the driver's writes.
    pub fn configure(&self, queue: &mut Queue) {
        queue.set_size(self.size);
        queue.set_desc_table_address(Some(self.desc as u32), Some((self.desc >> 32) as u32));
        queue.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
        queue.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
        queue.set_ready(true);
    }

    /// Writes one raw descriptor into the table.
    pub fn write_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.desc + 16 * u64::from(index);
        self.mem.write_obj(addr, GuestAddress(at)).unwrap();
        self.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    }

    /// Sets the avail ring's index as a (possibly broken) driver would.
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.avail_idx = idx;
        self.write_u16(self.avail + 2, idx);
    }

    /// Makes the chain starting at `head` available to the device.
    pub fn publish(&mut self, head: u16) {
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
        self.write_u16(slot, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.write_u16(self.avail + 2, self.avail_idx);
    }

    /// Writes `bufs` as a linked chain in the next free descriptors and publishes it.
    pub fn add_chain(&mut self, bufs: &[Buf]) -> u16 {
        let head = self.next_desc;
        for (i, buf) in bufs.iter().enumerate() {
            let index = (head + i as u16) % self.size;
            let next = (index + 1) % self.size;
            let mut flags = if buf.writable {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            if i + 1 < bufs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            self.write_desc(index, buf.addr, buf.len, flags, next);
        }
        self.next_desc = (head + bufs.len() as u16) % self.size;
        self.publish(head);
        head
    }

    /// The next used element the device returned, as (descriptor head, bytes written).
    pub fn next_used(&mut self) -> Option<(u32, u32)> {
        let idx: u16 = self.mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        if idx == self.used_seen {
            return None;
        }
        let elem = self.used + 4 + 8 * u64::from(self.used_seen % self.size);
        let id: u32 = self.mem.read_obj(GuestAddress(elem)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(elem + 4)).unwrap();
        self.used_seen = self.used_seen.wrapping_add(1);
        Some((id, len))
    }
}

/// Accepts every offered feature, programs the queues and activates the device.
pub fn activate(device: &mut dyn VirtioDevice, mem: &GuestMemory, queues: &[&GuestQueue]) {
    let features = device.avail_features();
    device.set_acked_features(features);
    for (guest, queue) in queues.iter().zip(device.queues_mut()) {
        guest.configure(queue);
    }
    device.activate(mem.clone()).unwrap();
}

/// A small deterministic generator for randomized tests (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

impl GuestQueue {
    /// Fills the descriptor table with garbage a hostile driver might write: addresses in and
    /// out of memory, huge lengths, any flags (indirect included) and links anywhere, then makes
    /// `heads` random chains available.
    pub fn add_garbage(&mut self, rng: &mut Rng, heads: usize) {
        for index in 0..self.size {
            let addr = match rng.below(4) {
                0 => rng.next(),
                1 => MEM_SIZE - rng.below(64),
                // Clear of the rings below 1 MiB, so the driver's own view stays intact.
                _ => 0x10_0000 + rng.below(MEM_SIZE - 0x10_0000),
            };
            let len = match rng.below(4) {
                0 => rng.next() as u32,
                1 => 0,
                _ => rng.below(0x2_0000) as u32,
            };
            let flags = rng.below(8) as u16;
            let next = rng.below(u64::from(self.size) + 4) as u16;
            self.write_desc(index, addr, len, flags, next);
        }
        for _ in 0..heads {
            let head = rng.below(u64::from(self.size) + 2) as u16;
            self.publish(head);
        }
    }
}
