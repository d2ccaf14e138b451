//! Model-specific registers set on every vCPU before it first runs.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

pub const MSR_IA32_SYSENTER_CS: u32 = 0x174;
pub const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
pub const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
pub const MSR_STAR: u32 = 0xc000_0081;
pub const MSR_LSTAR: u32 = 0xc000_0082;
pub const MSR_CSTAR: u32 = 0xc000_0083;
pub const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
pub const MSR_IA32_TSC: u32 = 0x10;
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
pub const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;

const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled, default memory type write-back.
const MTRR_ENABLE_WRITE_BACK: u64 = (1 << 11) | 6;

#[derive(Debug, thiserror::Error)]
pub enum MsrError {
    #[error("cannot build the MSR list: {0:?}")]
    List(vmm_sys_util::fam::Error),
    #[error("KVM_SET_MSRS failed: {0}")]
    Set(kvm_ioctls::Error),
    #[error("KVM_SET_MSRS set only {set} of {wanted} MSRs (first refused: {refused:#x})")]
    Partial {
        set: usize,
        wanted: usize,
        refused: u32,
    },
}

/// The architectural reset-ish values a freshly booted kernel expects.
pub fn boot_msr_entries() -> Vec<kvm_msr_entry> {
    let entry = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        entry(MSR_IA32_SYSENTER_CS, 0),
        entry(MSR_IA32_SYSENTER_ESP, 0),
        entry(MSR_IA32_SYSENTER_EIP, 0),
        entry(MSR_STAR, 0),
        entry(MSR_CSTAR, 0),
        entry(MSR_KERNEL_GS_BASE, 0),
        entry(MSR_SYSCALL_MASK, 0),
        entry(MSR_LSTAR, 0),
        entry(MSR_IA32_TSC, 0),
        entry(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        entry(MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITE_BACK),
    ]
}

pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), MsrError> {
    let entries = boot_msr_entries();
    let msrs = Msrs::from_entries(&entries).map_err(MsrError::List)?;
    let set = vcpu.set_msrs(&msrs).map_err(MsrError::Set)?;
    if set != entries.len() {
        return Err(MsrError::Partial {
            set,
            wanted: entries.len(),
            refused: entries[set].index,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_msrs_are_unique_and_sane() {
        let entries = boot_msr_entries();
        let mut indices: Vec<u32> = entries.iter().map(|e| e.index).collect();
        indices.sort_unstable();
        indices.dedup();
        assert_eq!(indices.len(), entries.len());
        let mtrr = entries
            .iter()
            .find(|e| e.index == MSR_MTRR_DEF_TYPE)
            .unwrap();
        assert_eq!(mtrr.data, 0x806);
        let misc = entries
            .iter()
            .find(|e| e.index == MSR_IA32_MISC_ENABLE)
            .unwrap();
        assert_eq!(misc.data, 1);
    }
}
