//! The virtio-mmio transport, version 2 ("modern", virtio 1.x): the register window through which
//! the guest driver discovers a device, negotiates features, sets up queues and drives status.

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::*;
use virtio_queue::{Queue, QueueT};

use super::{VirtioDevice, IRQ_CONFIG};
use crate::devices::bus::BusDevice;
use crate::logger::guest_warn;
use crate::GuestMemory;

/// "virt" in little endian.
const MAGIC_VALUE: u32 = 0x7472_6976;
const MMIO_VERSION: u32 = 2;
/// No PCI-style vendor applies; Linux only matches on the device ID.
const VENDOR_ID: u32 = 0;
/// Offset of QueueNotify, the register the guest writes a queue index to.
pub const NOTIFY_OFFSET: u32 = VIRTIO_MMIO_QUEUE_NOTIFY;

/// The transport side of one virtio-mmio device.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemory,
    device_features_sel: u32,
    driver_features_sel: u32,
    queue_sel: u32,
    status: u32,
    config_generation: u32,
}

impl MmioTransport {
    pub fn new(mem: GuestMemory, device: Arc<Mutex<dyn VirtioDevice>>) -> Self {
        Self {
            device,
            mem,
            device_features_sel: 0,
            driver_features_sel: 0,
            queue_sel: 0,
            status: 0,
            config_generation: 0,
        }
    }

    fn has_status(&self, bits: u32) -> bool {
        self.status & bits == bits
    }

    /// Queue registers may only change after feature negotiation and before the device is live.
    fn queue_config_allowed(&self) -> bool {
        self.has_status(VIRTIO_CONFIG_S_FEATURES_OK) && !self.has_status(VIRTIO_CONFIG_S_DRIVER_OK)
    }

    fn read_register(&self, device: &dyn VirtioDevice, offset: u32) -> u32 {
        let selected_queue = || device.queues().get(self.queue_sel as usize);
        match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC_VALUE,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => device.avail_features() as u32,
                1 => (device.avail_features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => selected_queue().map_or(0, |q| u32::from(q.max_size())),
            VIRTIO_MMIO_QUEUE_READY => selected_queue().map_or(0, |q| u32::from(q.ready())),
            VIRTIO_MMIO_INTERRUPT_STATUS => device.interrupt().status(),
            VIRTIO_MMIO_STATUS => self.status,
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            _ => {
                guest_warn!("virtio-mmio: read of unknown or write-only register {offset:#x}");
                0
            }
        }
    }

    fn write_register(&mut self, device: &mut dyn VirtioDevice, offset: u32, value: u32) {
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES => self.write_driver_features(device, value),
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            VIRTIO_MMIO_QUEUE_NUM
            | VIRTIO_MMIO_QUEUE_READY
            | VIRTIO_MMIO_QUEUE_DESC_LOW
            | VIRTIO_MMIO_QUEUE_DESC_HIGH
            | VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | VIRTIO_MMIO_QUEUE_USED_LOW
            | VIRTIO_MMIO_QUEUE_USED_HIGH => self.write_queue_register(device, offset, value),
            VIRTIO_MMIO_QUEUE_NOTIFY => notify_queue(device, value),
            VIRTIO_MMIO_INTERRUPT_ACK => device.interrupt().ack(value),
            VIRTIO_MMIO_STATUS => self.write_status(device, value),
            _ => guest_warn!("virtio-mmio: write of unknown or read-only register {offset:#x}"),
        }
    }

    fn write_driver_features(&mut self, device: &mut dyn VirtioDevice, value: u32) {
        if !self.has_status(VIRTIO_CONFIG_S_DRIVER) || self.has_status(VIRTIO_CONFIG_S_FEATURES_OK)
        {
            guest_warn!(
                "virtio-mmio: driver features written in status {:#x}, ignored",
                self.status
            );
            return;
        }
        // Each write replaces one 32-bit page of the accepted features.
        let shift = match self.driver_features_sel {
            0 => 0,
            1 => 32,
            sel => {
                guest_warn!("virtio-mmio: driver features page {sel} does not exist");
                return;
            }
        };
        let page_mask = 0xffff_ffffu64 << shift;
        let acked = (device.acked_features() & !page_mask) | (u64::from(value) << shift);
        device.set_acked_features(acked);
    }

    fn write_queue_register(&mut self, device: &mut dyn VirtioDevice, offset: u32, value: u32) {
        if !self.queue_config_allowed() {
            guest_warn!(
                "virtio-mmio: queue register {offset:#x} written in status {:#x}, ignored",
                self.status
            );
            return;
        }
        let sel = self.queue_sel;
        let Some(queue) = device.queues_mut().get_mut(sel as usize) else {
            guest_warn!("virtio-mmio: queue register {offset:#x} written for missing queue {sel}");
            return;
        };
        if offset != VIRTIO_MMIO_QUEUE_READY && queue.ready() {
            guest_warn!("virtio-mmio: queue {sel} is ready; register {offset:#x} left unchanged");
            return;
        }
        write_queue_field(queue, offset, value);
    }

    fn write_status(&mut self, device: &mut dyn VirtioDevice, value: u32) {
        if value == 0 {
            self.reset(device);
            return;
        }
        if value & VIRTIO_CONFIG_S_FAILED != 0 {
            guest_warn!(
                "virtio-mmio: driver gave up on device {}",
                device.device_type()
            );
            self.status |= VIRTIO_CONFIG_S_FAILED;
            return;
        }
        if value & self.status != self.status {
            guest_warn!(
                "virtio-mmio: status {value:#x} clears bits of {:#x} without a reset, ignored",
                self.status
            );
            return;
        }
        let ack_driver = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
        let allowed = match (self.status, value & !self.status) {
            (0, VIRTIO_CONFIG_S_ACKNOWLEDGE) => true,
            (VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER) => true,
            (s, VIRTIO_CONFIG_S_FEATURES_OK) if s == ack_driver => {
                // Leaving FEATURES_OK clear tells the driver its feature set was refused.
                let version_1 = device.acked_features() & (1 << VIRTIO_F_VERSION_1) != 0;
                if !version_1 {
                    log::error!("virtio-mmio: driver did not accept VIRTIO_F_VERSION_1");
                }
                version_1
            }
            (s, VIRTIO_CONFIG_S_DRIVER_OK) if s == ack_driver | VIRTIO_CONFIG_S_FEATURES_OK => {
                self.activate(device)
            }
            _ => {
                guest_warn!(
                    "virtio-mmio: status change {:#x} -> {value:#x} is not allowed",
                    self.status
                );
                false
            }
        };
        if allowed {
            self.status = value;
        }
    }

    fn activate(&mut self, device: &mut dyn VirtioDevice) -> bool {
        match device.activate(self.mem.clone()) {
            Ok(()) => true,
            Err(e) => {
                log::error!(
                    "virtio-mmio: device {} failed to activate: {e}",
                    device.device_type()
                );
                self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
                if let Err(e) = device.interrupt().trigger(IRQ_CONFIG) {
                    log::error!("virtio-mmio: cannot raise the config interrupt: {e}");
                }
                false
            }
        }
    }

    fn reset(&mut self, device: &mut dyn VirtioDevice) {
        device.reset();
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.status = 0;
    }
}

fn write_queue_field(queue: &mut Queue, offset: u32, value: u32) {
    match offset {
        VIRTIO_MMIO_QUEUE_NUM => {
            let size = u16::try_from(value).unwrap_or(0);
            if queue.try_set_size(size).is_err() {
                guest_warn!("virtio-mmio: invalid queue size {value}");
            }
        }
        VIRTIO_MMIO_QUEUE_READY => queue.set_ready(value == 1),
        VIRTIO_MMIO_QUEUE_DESC_LOW => queue.set_desc_table_address(Some(value), None),
        VIRTIO_MMIO_QUEUE_DESC_HIGH => queue.set_desc_table_address(None, Some(value)),
        VIRTIO_MMIO_QUEUE_AVAIL_LOW => queue.set_avail_ring_address(Some(value), None),
        VIRTIO_MMIO_QUEUE_AVAIL_HIGH => queue.set_avail_ring_address(None, Some(value)),
        VIRTIO_MMIO_QUEUE_USED_LOW => queue.set_used_ring_address(Some(value), None),
        VIRTIO_MMIO_QUEUE_USED_HIGH => queue.set_used_ring_address(None, Some(value)),
        _ => {}
    }
}

/// A QueueNotify write that reached us (no ioeventfd registered, as in tests): forward it.
fn notify_queue(device: &dyn VirtioDevice, index: u32) {
    match device.queue_events().get(index as usize) {
        Some(event) => {
            if let Err(e) = event.write(1) {
                log::error!("virtio-mmio: cannot signal queue {index}: {e}");
            }
        }
        None => guest_warn!("virtio-mmio: notify for missing queue {index}"),
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let device = self.device.clone();
        let device = device.lock().expect("virtio device lock poisoned");
        let config_offset = u64::from(VIRTIO_MMIO_CONFIG);
        if offset >= config_offset {
            device.read_config(offset - config_offset, data);
            return;
        }
        data.fill(0);
        if data.len() != 4 {
            guest_warn!(
                "virtio-mmio: {}-byte read of register {offset:#x}, registers are 32-bit",
                data.len()
            );
            return;
        }
        // The offset is below the config space, so it fits in a u32.
        let value = self.read_register(&*device, offset as u32);
        data.copy_from_slice(&value.to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let device = self.device.clone();
        let mut device = device.lock().expect("virtio device lock poisoned");
        let config_offset = u64::from(VIRTIO_MMIO_CONFIG);
        if offset >= config_offset {
            device.write_config(offset - config_offset, data);
            self.config_generation = self.config_generation.wrapping_add(1);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            guest_warn!(
                "virtio-mmio: {}-byte write of register {offset:#x}, registers are 32-bit",
                data.len()
            );
            return;
        };
        self.write_register(&mut *device, offset as u32, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::{guest_memory, TestDevice};
    use crate::devices::virtio::IRQ_VRING;

    const ACK: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE;
    const DRIVER: u32 = VIRTIO_CONFIG_S_DRIVER;
    const FEATURES_OK: u32 = VIRTIO_CONFIG_S_FEATURES_OK;
    const DRIVER_OK: u32 = VIRTIO_CONFIG_S_DRIVER_OK;

    fn read(t: &mut MmioTransport, offset: u32) -> u32 {
        let mut data = [0u8; 4];
        t.read(u64::from(offset), &mut data);
        u32::from_le_bytes(data)
    }

    fn write(t: &mut MmioTransport, offset: u32, value: u32) {
        t.write(u64::from(offset), &value.to_le_bytes());
    }

    fn transport() -> (MmioTransport, Arc<Mutex<TestDevice>>) {
        let device = Arc::new(Mutex::new(TestDevice::new()));
        (MmioTransport::new(guest_memory(), device.clone()), device)
    }

    /// Walks the status sequence up to FEATURES_OK, accepting every offered feature.
    fn negotiate(t: &mut MmioTransport) {
        write(t, VIRTIO_MMIO_STATUS, ACK);
        write(t, VIRTIO_MMIO_STATUS, ACK | DRIVER);
        for page in 0..2 {
            write(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, page);
            let features = read(t, VIRTIO_MMIO_DEVICE_FEATURES);
            write(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, page);
            write(t, VIRTIO_MMIO_DRIVER_FEATURES, features);
        }
        write(t, VIRTIO_MMIO_STATUS, ACK | DRIVER | FEATURES_OK);
    }

    fn setup_queue(t: &mut MmioTransport, index: u32, base: u64) {
        write(t, VIRTIO_MMIO_QUEUE_SEL, index);
        write(t, VIRTIO_MMIO_QUEUE_NUM, 16);
        write(t, VIRTIO_MMIO_QUEUE_DESC_LOW, base as u32);
        write(t, VIRTIO_MMIO_QUEUE_DESC_HIGH, (base >> 32) as u32);
        write(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (base + 0x1000) as u32);
        write(t, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, 0);
        write(t, VIRTIO_MMIO_QUEUE_USED_LOW, (base + 0x2000) as u32);
        write(t, VIRTIO_MMIO_QUEUE_USED_HIGH, 0);
        write(t, VIRTIO_MMIO_QUEUE_READY, 1);
    }

    #[test]
    fn identifies_as_modern_virtio_mmio() {
        let (mut t, _) = transport();
        assert_eq!(read(&mut t, VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
        assert_eq!(read(&mut t, VIRTIO_MMIO_VERSION), 2);
        assert_eq!(read(&mut t, VIRTIO_MMIO_DEVICE_ID), TestDevice::TYPE);
        assert_eq!(read(&mut t, VIRTIO_MMIO_VENDOR_ID), 0);
        // Registers are 32-bit: a narrower read of the magic value returns nothing.
        let mut byte = [0xffu8];
        t.read(u64::from(VIRTIO_MMIO_MAGIC_VALUE), &mut byte);
        assert_eq!(byte, [0]);
    }

    #[test]
    fn feature_pages_follow_the_selectors() {
        let (mut t, device) = transport();
        let offered = device.lock().unwrap().avail_features();
        write(&mut t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
        assert_eq!(read(&mut t, VIRTIO_MMIO_DEVICE_FEATURES), offered as u32);
        write(&mut t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        assert_eq!(
            read(&mut t, VIRTIO_MMIO_DEVICE_FEATURES),
            (offered >> 32) as u32
        );
        write(&mut t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
        assert_eq!(read(&mut t, VIRTIO_MMIO_DEVICE_FEATURES), 0);

        // Driver features are only taken between DRIVER and FEATURES_OK.
        write(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, u32::MAX);
        assert_eq!(device.lock().unwrap().acked_features(), 0);
        write(&mut t, VIRTIO_MMIO_STATUS, ACK);
        write(&mut t, VIRTIO_MMIO_STATUS, ACK | DRIVER);
        write(&mut t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        write(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, u32::MAX);
        // Only what was offered sticks.
        assert_eq!(
            device.lock().unwrap().acked_features(),
            offered & 0xffff_ffff_0000_0000
        );
        // A page written again is replaced, not merged; the other page is kept.
        write(&mut t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        write(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 1 << 3);
        write(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 0);
        assert_eq!(
            device.lock().unwrap().acked_features(),
            offered & 0xffff_ffff_0000_0000
        );
    }

    #[test]
    fn features_ok_requires_version_1() {
        let (mut t, _) = transport();
        write(&mut t, VIRTIO_MMIO_STATUS, ACK);
        write(&mut t, VIRTIO_MMIO_STATUS, ACK | DRIVER);
        write(&mut t, VIRTIO_MMIO_STATUS, ACK | DRIVER | FEATURES_OK);
        assert_eq!(read(&mut t, VIRTIO_MMIO_STATUS), ACK | DRIVER);

        negotiate(&mut t);
        assert_eq!(read(&mut t, VIRTIO_MMIO_STATUS), ACK | DRIVER | FEATURES_OK);
    }

    #[test]
    fn status_rejects_skipped_steps_and_cleared_bits() {
        let (mut t, _) = transport();
        write(&mut t, VIRTIO_MMIO_STATUS, ACK | DRIVER);
        assert_eq!(read(&mut t, VIRTIO_MMIO_STATUS), 0);
        write(&mut t, VIRTIO_MMIO_STATUS, ACK);
        write(
            &mut t,
            VIRTIO_MMIO_STATUS,
            ACK | DRIVER | FEATURES_OK | DRIVER_OK,
        );
        assert_eq!(read(&mut t, VIRTIO_MMIO_STATUS), ACK);
        write(&mut t, VIRTIO_MMIO_STATUS, DRIVER);
        assert_eq!(read(&mut t, VIRTIO_MMIO_STATUS), ACK);
        write(&mut t, VIRTIO_MMIO_STATUS, ACK | VIRTIO_CONFIG_S_FAILED);
        assert_eq!(
            read(&mut t, VIRTIO_MMIO_STATUS),
            ACK | VIRTIO_CONFIG_S_FAILED
        );
    }

    #[test]
    fn queue_setup_then_driver_ok_activates() {
        let (mut t, device) = transport();
        // Queue registers are ignored before FEATURES_OK.
        write(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
        write(&mut t, VIRTIO_MMIO_QUEUE_NUM, 8);
        assert_eq!(device.lock().unwrap().queues()[0].size(), 16);

        negotiate(&mut t);
        write(&mut t, VIRTIO_MMIO_QUEUE_SEL, 1);
        assert_eq!(read(&mut t, VIRTIO_MMIO_QUEUE_NUM_MAX), 16);
        write(&mut t, VIRTIO_MMIO_QUEUE_SEL, 2);
        assert_eq!(read(&mut t, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
        // Not a power of two, and larger than the maximum: both refused.
        write(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
        write(&mut t, VIRTIO_MMIO_QUEUE_NUM, 6);
        write(&mut t, VIRTIO_MMIO_QUEUE_NUM, 32);
        assert_eq!(device.lock().unwrap().queues()[0].size(), 16);

        setup_queue(&mut t, 0, 0x1_0000);
        setup_queue(&mut t, 1, 0x2_0000);
        assert_eq!(read(&mut t, VIRTIO_MMIO_QUEUE_READY), 1);
        {
            let dev = device.lock().unwrap();
            let q = &dev.queues()[1];
            assert_eq!(q.desc_table(), 0x2_0000);
            assert_eq!(q.avail_ring(), 0x2_1000);
            assert_eq!(q.used_ring(), 0x2_2000);
            assert!(!dev.is_activated());
        }
        // A ready queue's layout is frozen.
        write(&mut t, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x5_0000);
        assert_eq!(device.lock().unwrap().queues()[1].desc_table(), 0x2_0000);

        write(
            &mut t,
            VIRTIO_MMIO_STATUS,
            ACK | DRIVER | FEATURES_OK | DRIVER_OK,
        );
        assert_eq!(
            read(&mut t, VIRTIO_MMIO_STATUS),
            ACK | DRIVER | FEATURES_OK | DRIVER_OK
        );
        assert!(device.lock().unwrap().is_activated());
        // Once live, queue registers are frozen too.
        write(&mut t, VIRTIO_MMIO_QUEUE_READY, 0);
        assert!(device.lock().unwrap().queues()[1].ready());
    }

    #[test]
    fn driver_ok_with_a_queue_outside_memory_needs_reset() {
        let (mut t, device) = transport();
        negotiate(&mut t);
        setup_queue(&mut t, 0, 0x1_0000);
        setup_queue(&mut t, 1, 0x1_0000_0000);
        write(
            &mut t,
            VIRTIO_MMIO_STATUS,
            ACK | DRIVER | FEATURES_OK | DRIVER_OK,
        );
        let status = read(&mut t, VIRTIO_MMIO_STATUS);
        assert_eq!(status & DRIVER_OK, 0);
        assert_ne!(status & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
        assert_eq!(read(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), IRQ_CONFIG);
        assert!(!device.lock().unwrap().is_activated());
    }

    #[test]
    fn reset_clears_status_features_and_queues() {
        let (mut t, device) = transport();
        negotiate(&mut t);
        setup_queue(&mut t, 0, 0x1_0000);
        setup_queue(&mut t, 1, 0x2_0000);
        write(
            &mut t,
            VIRTIO_MMIO_STATUS,
            ACK | DRIVER | FEATURES_OK | DRIVER_OK,
        );
        device
            .lock()
            .unwrap()
            .interrupt()
            .trigger(IRQ_VRING)
            .unwrap();

        write(&mut t, VIRTIO_MMIO_STATUS, 0);
        assert_eq!(read(&mut t, VIRTIO_MMIO_STATUS), 0);
        assert_eq!(read(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
        let dev = device.lock().unwrap();
        assert!(!dev.is_activated());
        assert_eq!(dev.acked_features(), 0);
        assert!(dev.queues().iter().all(|q| !q.ready()));
        assert_eq!(dev.resets, 1);
    }

    #[test]
    fn interrupt_status_and_ack() {
        let (mut t, device) = transport();
        let irq = device.lock().unwrap().interrupt();
        irq.trigger(IRQ_VRING).unwrap();
        irq.trigger(IRQ_CONFIG).unwrap();
        assert_eq!(
            read(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS),
            IRQ_VRING | IRQ_CONFIG
        );
        write(&mut t, VIRTIO_MMIO_INTERRUPT_ACK, IRQ_VRING);
        assert_eq!(read(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), IRQ_CONFIG);
    }

    #[test]
    fn queue_notify_signals_the_queue_eventfd() {
        let (mut t, device) = transport();
        write(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
        write(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 7);
        let dev = device.lock().unwrap();
        assert_eq!(dev.queue_events()[1].read().unwrap(), 1);
        assert!(dev.queue_events()[0].read().is_err());
    }

    #[test]
    fn config_space_reads_at_any_width_and_bumps_generation_on_write() {
        let (mut t, device) = transport();
        let mut quad = [0u8; 8];
        t.read(0x100, &mut quad);
        assert_eq!(quad, TestDevice::CONFIG);
        let mut byte = [0u8; 1];
        t.read(0x103, &mut byte);
        assert_eq!(byte, [TestDevice::CONFIG[3]]);
        let mut word = [0xffu8; 4];
        t.read(0x106, &mut word);
        assert_eq!(word, [TestDevice::CONFIG[6], TestDevice::CONFIG[7], 0, 0]);

        let generation = read(&mut t, VIRTIO_MMIO_CONFIG_GENERATION);
        t.write(0x101, &[0xaa]);
        assert_eq!(device.lock().unwrap().config[1], 0xaa);
        assert_ne!(read(&mut t, VIRTIO_MMIO_CONFIG_GENERATION), generation);
    }

    #[test]
    fn a_guest_hammering_an_unknown_register_gets_a_few_log_lines() {
        crate::logger::capture::install();
        let (mut t, _) = transport();
        for _ in 0..1000 {
            read(&mut t, 0x0ac);
        }
        let lines = crate::logger::capture::lines_of_this_thread("unknown or write-only register");
        // At most a burst (the call site's budget is shared with the other tests' reads).
        assert!(
            lines.len() <= crate::logger::GUEST_WARN_BURST as usize,
            "{} lines: {lines:?}",
            lines.len()
        );
    }

    #[test]
    fn unknown_registers_read_zero_and_ignore_writes() {
        let (mut t, _) = transport();
        assert_eq!(read(&mut t, 0x0ac), 0);
        write(&mut t, 0x0ac, 1);
        write(&mut t, VIRTIO_MMIO_MAGIC_VALUE, 0);
        assert_eq!(read(&mut t, VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
    }
}
