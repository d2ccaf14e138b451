//! Small helpers around `virtio_queue::Queue` shared by the devices.

use std::io;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::{IrqTrigger, IRQ_VRING};
use crate::GuestMemory;

/// Consumes a pending eventfd signal. An empty (non-blocking) eventfd is not an error.
pub(crate) fn drain_event(event: &EventFd, what: &str) {
    if let Err(e) = event.read() {
        if e.kind() != io::ErrorKind::WouldBlock {
            log::error!("virtio: cannot read the {what} eventfd: {e}");
        }
    }
}

/// Raises the used-ring interrupt unless the driver asked not to be told (EVENT_IDX).
pub(crate) fn signal_used(queue: &mut Queue, mem: &GuestMemory, irq: &IrqTrigger) {
    let needed = queue.needs_notification(mem).unwrap_or_else(|e| {
        log::warn!("virtio: cannot read the used event index, interrupting anyway: {e}");
        true
    });
    if needed {
        if let Err(e) = irq.trigger(IRQ_VRING) {
            log::error!("virtio: cannot raise the used-ring interrupt: {e}");
        }
    }
}

/// Adds a chain to the used ring; the guest cannot make this fail except by moving the ring
/// out of memory, which is logged and otherwise ignored.
pub(crate) fn add_used(queue: &mut Queue, mem: &GuestMemory, head: u16, len: u32) {
    if let Err(e) = queue.add_used(mem, head, len) {
        log::error!("virtio: cannot return descriptor {head} to the used ring: {e}");
    }
}
