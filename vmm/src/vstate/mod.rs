//! KVM state: guest memory, the VM (memory slots, in-kernel irqchip and PIT) and its vCPUs.

pub mod memory;
pub mod reflect;
pub mod vcpu;
pub mod vm;

use std::fmt;
use std::io;
use std::sync::Mutex;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Why a running VM stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmExitReason {
    /// The guest rebooted (i8042 reset or a KVM reset event): a normal end for a microVM.
    GuestReset,
    /// The guest powered off (KVM shutdown system event).
    GuestPowerOff,
    /// A vCPU hit something the VMM cannot continue from (triple fault, internal error, ...).
    /// `details` holds the exit reason and the register dump.
    VcpuFault { vcpu: u8, details: String },
    /// A device's back-end process went away (virtiofsd): the guest's file system is gone, so
    /// the VM ends rather than hang every process that touches it.
    BackendGone { device: String },
}

impl VmExitReason {
    pub fn is_clean(&self) -> bool {
        !matches!(
            self,
            VmExitReason::VcpuFault { .. } | VmExitReason::BackendGone { .. }
        )
    }
}

impl fmt::Display for VmExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmExitReason::GuestReset => f.write_str("guest reset"),
            VmExitReason::GuestPowerOff => f.write_str("guest power-off"),
            VmExitReason::VcpuFault { vcpu, details } => write!(f, "vCPU {vcpu} fault: {details}"),
            VmExitReason::BackendGone { device } => {
                write!(f, "the back-end of {device} went away")
            }
        }
    }
}

/// How vCPU threads tell the main thread that the VM must stop: the first reason wins, and an
/// EventFd wakes the event loop.
pub struct VmExitSignal {
    evt: EventFd,
    reason: Mutex<Option<VmExitReason>>,
}

impl VmExitSignal {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            evt: EventFd::new(EFD_NONBLOCK)?,
            reason: Mutex::new(None),
        })
    }

    pub fn signal(&self, reason: VmExitReason) {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
        }
        if let Err(e) = self.evt.write(1) {
            log::error!("cannot wake the event loop: {e}");
        }
    }

    pub fn reason(&self) -> Option<VmExitReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins_and_wakes() {
        let signal = VmExitSignal::new().unwrap();
        assert_eq!(signal.reason(), None);
        signal.signal(VmExitReason::VcpuFault {
            vcpu: 1,
            details: "triple fault".into(),
        });
        signal.signal(VmExitReason::GuestReset);
        assert_eq!(signal.eventfd().read().unwrap(), 2);
        let reason = signal.reason().unwrap();
        assert!(!reason.is_clean());
        assert_eq!(reason.to_string(), "vCPU 1 fault: triple fault");
    }
}
