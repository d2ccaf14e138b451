//! The interrupt line of a virtio-mmio device: an InterruptStatus word the driver reads and
//! acknowledges, and an eventfd that KVM turns into a guest interrupt (irqfd).

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// InterruptStatus bit: a used ring was updated.
pub const IRQ_VRING: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
/// InterruptStatus bit: the configuration (or the device status) changed.
pub const IRQ_CONFIG: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_CONFIG;

#[derive(Debug)]
pub struct IrqTrigger {
    status: AtomicU32,
    /// Bits that read as set whatever the driver acknowledges; see [`IrqTrigger::set_sticky`].
    sticky: AtomicU32,
    event: EventFd,
}

impl IrqTrigger {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            status: AtomicU32::new(0),
            sticky: AtomicU32::new(0),
            event: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// Sets `reason` in InterruptStatus and raises the interrupt.
    pub fn trigger(&self, reason: u32) -> io::Result<()> {
        self.status.fetch_or(reason, Ordering::SeqCst);
        self.event.write(1)
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst) | self.sticky.load(Ordering::SeqCst)
    }

    /// Makes `bits` read as set in InterruptStatus until [`IrqTrigger::clear_sticky`]. For a
    /// device whose back-end writes the eventfd itself (vhost-user), so InterruptStatus cannot
    /// say why it fired: Linux's virtio-mmio handler only looks at the used rings when it reads
    /// VRING there, and would otherwise drop the back-end's interrupts.
    pub fn set_sticky(&self, bits: u32) {
        self.sticky.fetch_or(bits, Ordering::SeqCst);
    }

    pub fn clear_sticky(&self) {
        self.sticky.store(0, Ordering::SeqCst);
    }

    /// Clears the InterruptStatus bits the driver acknowledged.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The eventfd to register as the device's irqfd.
    pub fn event(&self) -> &EventFd {
        &self.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_sets_status_and_signals_until_acked() {
        let irq = IrqTrigger::new().unwrap();
        irq.trigger(IRQ_VRING).unwrap();
        irq.trigger(IRQ_CONFIG).unwrap();
        assert_eq!(irq.status(), IRQ_VRING | IRQ_CONFIG);
        assert_eq!(irq.event().read().unwrap(), 2);
        irq.ack(IRQ_VRING);
        assert_eq!(irq.status(), IRQ_CONFIG);
    }

    #[test]
    fn sticky_bits_survive_acks_until_cleared() {
        let irq = IrqTrigger::new().unwrap();
        irq.set_sticky(IRQ_VRING);
        assert_eq!(irq.status(), IRQ_VRING);
        irq.trigger(IRQ_CONFIG).unwrap();
        irq.ack(u32::MAX);
        assert_eq!(irq.status(), IRQ_VRING);
        irq.clear_sticky();
        assert_eq!(irq.status(), 0);
    }
}
