//! The KVM VM: guest memory slots, in-kernel irqchip (PIC + IOAPIC + LAPICs) and PIT.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::arch::layout::KVM_TSS_ADDR;
use crate::GuestMemory;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{0} failed: {1}")]
    Ioctl(&'static str, kvm_ioctls::Error),
    #[error("guest memory needs {needed} KVM memory slots, KVM has {available}")]
    TooManySlots { needed: usize, available: usize },
}

pub struct Vm {
    fd: VmFd,
}

impl Vm {
    /// Creates the VM with its irqchip and PIT, and maps every region of `mem` into it.
    pub fn new(kvm: &Kvm, mem: &GuestMemory) -> Result<Self, VmError> {
        let fd = kvm
            .create_vm()
            .map_err(|e| VmError::Ioctl("KVM_CREATE_VM", e))?;
        let vm = Vm { fd };
        vm.register_memory(kvm, mem)?;
        vm.fd
            .set_tss_address(KVM_TSS_ADDR as usize)
            .map_err(|e| VmError::Ioctl("KVM_SET_TSS_ADDR", e))?;
        vm.fd
            .create_irq_chip()
            .map_err(|e| VmError::Ioctl("KVM_CREATE_IRQCHIP", e))?;
        // The PIT must follow the irqchip. A dummy speaker port 0x61 keeps the PIT calibration
        // loops of Linux in the kernel instead of exiting to us.
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.fd
            .create_pit2(pit)
            .map_err(|e| VmError::Ioctl("KVM_CREATE_PIT2", e))?;
        Ok(vm)
    }

    fn register_memory(&self, kvm: &Kvm, mem: &GuestMemory) -> Result<(), VmError> {
        let available = kvm.get_nr_memslots();
        if mem.num_regions() > available {
            return Err(VmError::TooManySlots {
                needed: mem.num_regions(),
                available,
            });
        }
        for (slot, region) in mem.iter().enumerate() {
            let region_desc = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
                flags: 0,
            };
            // SAFETY: the mapping belongs to `mem`, whose regions are reference-counted and
            // outlive the VM: the builder keeps `mem` alive as long as the VM fd.
            unsafe { self.fd.set_user_memory_region(region_desc) }
                .map_err(|e| VmError::Ioctl("KVM_SET_USER_MEMORY_REGION", e))?;
        }
        Ok(())
    }

    pub fn fd(&self) -> &VmFd {
        &self.fd
    }
}
