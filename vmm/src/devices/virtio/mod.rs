//! virtio devices (block, vsock, fs, net) and the virtio-mmio transport that exposes them to the guest.
//!
//! A device is shared between two threads: the vCPU thread reaches it through its
//! [`MmioTransport`] on the MMIO bus (register accesses, activation, reset), and the event loop
//! runs it as a `MutEventSubscriber` (queue notifications via ioeventfd, back-end fds).
//! Interrupts go out through an irqfd, so neither side ever polls.

pub mod block;
pub mod fs;
mod interrupt;
pub mod mmio;
pub mod net;
mod queue;
pub mod vsock;

#[cfg(test)]
pub(crate) mod test_utils;

use std::io;
use std::sync::{Arc, Mutex};

use event_manager::{MutEventSubscriber, SubscriberOps};
use kvm_ioctls::{IoEventAddress, VmFd};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::devices::bus::{Bus, BusError};
use crate::{EventManager, GuestMemory};

pub use interrupt::{IrqTrigger, IRQ_CONFIG, IRQ_VRING};
pub use mmio::MmioTransport;

/// Size of the register window of one virtio-mmio device.
pub const MMIO_SLOT_SIZE: u64 = 0x1000;

/// Where a virtio-mmio device lives: its register window and its interrupt line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioSlot {
    pub base: u64,
    pub gsi: u32,
}

impl MmioSlot {
    /// The kernel command-line entry that makes the guest's virtio-mmio driver probe this slot.
    pub fn cmdline_fragment(&self) -> String {
        format!(
            "virtio_mmio.device={}K@{:#x}:{}",
            MMIO_SLOT_SIZE / 1024,
            self.base,
            self.gsi
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    #[error("cannot create an eventfd")]
    EventFd(#[source] io::Error),
    #[error("cannot create virtio queue {index} with {size} entries: {source:?}")]
    Queue {
        index: usize,
        size: u16,
        source: virtio_queue::Error,
    },
    #[error("cannot register the notification ioeventfd of queue {queue} at {addr:#x}")]
    RegisterIoEvent {
        queue: usize,
        addr: u64,
        source: kvm_ioctls::Error,
    },
    #[error("cannot register the irqfd for GSI {gsi}")]
    RegisterIrqFd { gsi: u32, source: kvm_ioctls::Error },
    #[error("cannot place the virtio-mmio device at {base:#x}")]
    Bus { base: u64, source: BusError },
}

/// Why a device refused to start when the driver set DRIVER_OK.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActivateError {
    #[error("queue {0} is not ready or lies outside guest memory")]
    InvalidQueue(usize),
    #[error("the driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)")]
    LegacyDriver,
    #[error("cannot signal activation to the event loop: {0}")]
    Signal(String),
    #[error("its vhost-user back-end did not take the rings")]
    Backend,
}

/// State every virtio device carries: features, queues, their notification eventfds, the
/// interrupt and the guest memory it was activated with.
pub struct VirtioCommon {
    pub avail_features: u64,
    pub acked_features: u64,
    pub queues: Vec<Queue>,
    pub queue_events: Vec<EventFd>,
    pub interrupt: Arc<IrqTrigger>,
    /// Written on activation and reset so the event loop reacts to them on its own thread.
    pub state_event: EventFd,
    pub mem: Option<GuestMemory>,
}

impl VirtioCommon {
    pub fn new(avail_features: u64, queue_sizes: &[u16]) -> Result<Self, VirtioError> {
        let queues = queue_sizes
            .iter()
            .enumerate()
            .map(|(index, &size)| {
                Queue::new(size).map_err(|source| VirtioError::Queue {
                    index,
                    size,
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let queue_events = queue_sizes
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(VirtioError::EventFd)?;
        Ok(Self {
            avail_features: avail_features | (1 << VIRTIO_F_VERSION_1),
            acked_features: 0,
            queues,
            queue_events,
            interrupt: Arc::new(IrqTrigger::new().map_err(VirtioError::EventFd)?),
            state_event: EventFd::new(EFD_NONBLOCK).map_err(VirtioError::EventFd)?,
            mem: None,
        })
    }

    pub fn has_acked(&self, bit: u32) -> bool {
        self.acked_features & (1u64 << bit) != 0
    }

    /// Checks every queue against guest memory and records the memory: the device is live after.
    pub fn activate(&mut self, mem: GuestMemory) -> Result<(), ActivateError> {
        if !self.has_acked(VIRTIO_F_VERSION_1) {
            return Err(ActivateError::LegacyDriver);
        }
        if let Some(index) = self.queues.iter().position(|q| !q.is_valid(&mem)) {
            return Err(ActivateError::InvalidQueue(index));
        }
        let event_idx = self.has_acked(virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX);
        for queue in &mut self.queues {
            queue.set_event_idx(event_idx);
        }
        self.mem = Some(mem);
        self.state_event
            .write(1)
            .map_err(|e| ActivateError::Signal(e.to_string()))
    }

    /// Returns to the state before the driver first touched the device.
    pub fn reset(&mut self) {
        self.acked_features = 0;
        self.queues.iter_mut().for_each(QueueT::reset);
        self.interrupt.ack(u32::MAX);
        self.interrupt.clear_sticky();
        self.mem = None;
        if let Err(e) = self.state_event.write(1) {
            log::error!("virtio: cannot signal a device reset to the event loop: {e}");
        }
    }
}

/// A virtio device as the transport sees it. Devices keep their shared state in a
/// [`VirtioCommon`]; the provided methods cover the transport's needs from it.
// Each device implements the same four accessors (type, common state, config space): that is
// the trait's shape, not a twin to merge.
pub trait VirtioDevice: Send {
    /// The virtio device ID (VIRTIO_ID_*).
    fn device_type(&self) -> u32;
    fn common(&self) -> &VirtioCommon;
    fn common_mut(&mut self) -> &mut VirtioCommon;
    /// Reads the device-specific configuration space; bytes past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space. Read-only by default.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::warn!(
            "virtio device {}: ignoring a {}-byte write to read-only config offset {offset:#x}",
            self.device_type(),
            data.len()
        );
    }

    fn activate(&mut self, mem: GuestMemory) -> Result<(), ActivateError> {
        self.common_mut().activate(mem)
    }
    fn reset(&mut self) {
        self.common_mut().reset();
    }
    fn is_activated(&self) -> bool {
        self.common().mem.is_some()
    }
    fn avail_features(&self) -> u64 {
        self.common().avail_features
    }
    fn acked_features(&self) -> u64 {
        self.common().acked_features
    }
    /// Records the features the driver accepts; features the device did not offer are dropped.
    fn set_acked_features(&mut self, features: u64) {
        let common = self.common_mut();
        let unknown = features & !common.avail_features;
        if unknown != 0 {
            log::warn!("virtio: driver acked features {unknown:#x} that were not offered");
        }
        common.acked_features = features & common.avail_features;
    }
    fn queues(&self) -> &[Queue] {
        &self.common().queues
    }
    fn queues_mut(&mut self) -> &mut [Queue] {
        &mut self.common_mut().queues
    }
    fn queue_events(&self) -> &[EventFd] {
        &self.common().queue_events
    }
    fn interrupt(&self) -> Arc<IrqTrigger> {
        self.common().interrupt.clone()
    }
}

pub(crate) use crate::config::error_chain;

/// Reads `data.len()` bytes at `offset` out of a device's config space image.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let len = src.len().min(data.len());
        data[..len].copy_from_slice(&src[..len]);
    }
}

/// Wires a device into a VM: queue-notify ioeventfds and the irqfd in KVM, the transport on the
/// MMIO bus, the device in the event loop. Returns the kernel command-line fragment for the slot.
pub fn attach_mmio_device<D>(
    vm: &VmFd,
    mmio_bus: &Bus,
    event_manager: &mut EventManager,
    mem: &GuestMemory,
    device: Arc<Mutex<D>>,
    slot: MmioSlot,
) -> Result<String, VirtioError>
where
    D: VirtioDevice + MutEventSubscriber + 'static,
{
    {
        let dev = device.lock().expect("virtio device lock poisoned");
        log::info!(
            "virtio: device type {} at {:#x}, GSI {}",
            dev.device_type(),
            slot.base,
            slot.gsi
        );
        let notify_addr = slot.base + u64::from(mmio::NOTIFY_OFFSET);
        for (queue, event) in dev.queue_events().iter().enumerate() {
            vm.register_ioevent(event, &IoEventAddress::Mmio(notify_addr), queue as u32)
                .map_err(|source| VirtioError::RegisterIoEvent {
                    queue,
                    addr: notify_addr,
                    source,
                })?;
        }
        vm.register_irqfd(dev.interrupt().event(), slot.gsi)
            .map_err(|source| VirtioError::RegisterIrqFd {
                gsi: slot.gsi,
                source,
            })?;
    }
    let transport = MmioTransport::new(mem.clone(), device.clone());
    mmio_bus
        .insert(Arc::new(Mutex::new(transport)), slot.base, MMIO_SLOT_SIZE)
        .map_err(|source| VirtioError::Bus {
            base: slot.base,
            source,
        })?;
    event_manager.add_subscriber(device);
    Ok(slot.cmdline_fragment())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_fragment_names_size_base_and_irq() {
        let slot = MmioSlot {
            base: 0xd000_0000,
            gsi: 5,
        };
        assert_eq!(
            slot.cmdline_fragment(),
            "virtio_mmio.device=4K@0xd0000000:5"
        );
    }

    #[test]
    fn config_reads_clip_and_zero_fill() {
        let config = [1u8, 2, 3, 4];
        let mut out = [0xffu8; 4];
        read_config_bytes(&config, 2, &mut out);
        assert_eq!(out, [3, 4, 0, 0]);
        read_config_bytes(&config, 9, &mut out);
        assert_eq!(out, [0; 4]);
        read_config_bytes(&config, u64::MAX, &mut out);
        assert_eq!(out, [0; 4]);
    }

    #[test]
    #[ignore = "needs /dev/kvm"]
    fn attach_registers_with_kvm_and_places_the_transport_on_the_bus() {
        use crate::devices::virtio::block::{Block, BlockDeviceConfig};
        use vmm_sys_util::tempfile::TempFile;

        let kvm = kvm_ioctls::Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        vm.create_irq_chip().unwrap();
        let mem = test_utils::guest_memory();
        let bus = Bus::new();
        let mut event_manager = EventManager::new().unwrap();
        let image = TempFile::new().unwrap();
        image.as_file().set_len(4096).unwrap();
        let config = BlockDeviceConfig {
            path: image.as_path().to_owned(),
            read_only: false,
            id: None,
        };
        let block = Arc::new(Mutex::new(Block::new(&config).unwrap()));
        let slot = MmioSlot {
            base: 0xd000_0000,
            gsi: 5,
        };
        let fragment =
            attach_mmio_device(&vm, &bus, &mut event_manager, &mem, block.clone(), slot).unwrap();
        assert_eq!(fragment, "virtio_mmio.device=4K@0xd0000000:5");

        let mut word = [0u8; 4];
        assert!(bus.read(0xd000_0000, &mut word));
        assert_eq!(u32::from_le_bytes(word), 0x7472_6976);
        assert!(bus.read(0xd000_0008, &mut word));
        assert_eq!(u32::from_le_bytes(word), 2, "virtio-blk device ID");
        let mut capacity = [0u8; 8];
        assert!(bus.read(0xd000_0100, &mut capacity));
        assert_eq!(u64::from_le_bytes(capacity), 8);

        // The same slot cannot hold a second device.
        let other = Arc::new(Mutex::new(Block::new(&config).unwrap()));
        let err = attach_mmio_device(&vm, &bus, &mut event_manager, &mem, other, slot);
        assert!(err.is_err());
    }

    #[test]
    fn common_offers_version_1_and_rejects_bad_queue_sizes() {
        let common = VirtioCommon::new(0, &[256]).unwrap();
        assert_ne!(common.avail_features & (1 << VIRTIO_F_VERSION_1), 0);
        assert!(matches!(
            VirtioCommon::new(0, &[100]),
            Err(VirtioError::Queue { index: 0, .. })
        ));
    }
}
