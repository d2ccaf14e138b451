//! Boot-time register state: 64-bit long mode, flat segments, identity paging.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use super::gdt::{boot_gdt, segment_from_gdt, CODE_SELECTOR, DATA_SELECTOR, TSS_SELECTOR};
use super::layout::{BOOT_STACK_POINTER, GDT_ADDR, IDT_ADDR, ZERO_PAGE_ADDR};
use super::paging::write_identity_page_tables;
use crate::GuestMemory;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_NW: u64 = 1 << 29;
const X86_CR0_CD: u64 = 1 << 30;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// Bit 1 of RFLAGS is reserved and always set.
const RFLAGS_RESERVED: u64 = 1 << 1;

#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("cannot write boot tables to guest memory")]
    GuestMemory(#[from] GuestMemoryError),
    #[error("{0} failed: {1}")]
    Ioctl(&'static str, kvm_ioctls::Error),
}

/// x87 and SSE control words as after FNINIT / reset.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// General registers of the boot vCPU: entry point, stack, and the zero page in RSI.
pub fn boot_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rflags: RFLAGS_RESERVED,
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_ADDR,
        ..Default::default()
    }
}

/// Turns `sregs` into 64-bit long mode with the boot GDT, an empty IDT and page tables at `cr3`.
pub fn long_mode_sregs(mut sregs: kvm_sregs, cr3: u64) -> kvm_sregs {
    let gdt = boot_gdt();
    let code = segment_from_gdt(gdt[1], CODE_SELECTOR);
    let data = segment_from_gdt(gdt[2], DATA_SELECTOR);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_gdt(gdt[3], TSS_SELECTOR);
    // Caches on: the reset value of CR0 has CD and NW set.
    sregs.cr0 = (sregs.cr0 & !(X86_CR0_CD | X86_CR0_NW)) | X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.cr3 = cr3;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.efer |= EFER_LME | EFER_LMA;
    sregs
}

/// Writes the GDT, IDT and page tables into guest memory.
pub fn write_boot_tables(mem: &GuestMemory) -> Result<u64, RegsError> {
    for (i, entry) in boot_gdt().iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_ADDR + i as u64 * 8))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))?;
    Ok(write_identity_page_tables(mem)?)
}

/// Puts the boot vCPU at `entry` in 64-bit mode; `cr3` comes from `write_boot_tables`.
pub fn setup_boot_vcpu(vcpu: &VcpuFd, entry: u64, cr3: u64) -> Result<(), RegsError> {
    let sregs = vcpu
        .get_sregs()
        .map_err(|e| RegsError::Ioctl("KVM_GET_SREGS", e))?;
    vcpu.set_sregs(&long_mode_sregs(sregs, cr3))
        .map_err(|e| RegsError::Ioctl("KVM_SET_SREGS", e))?;
    vcpu.set_regs(&boot_regs(entry))
        .map_err(|e| RegsError::Ioctl("KVM_SET_REGS", e))
}

pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    vcpu.set_fpu(&boot_fpu())
        .map_err(|e| RegsError::Ioctl("KVM_SET_FPU", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_control_registers() {
        let reset = kvm_sregs {
            cr0: 0x6000_0010,
            ..Default::default()
        };
        let sregs = long_mode_sregs(reset, 0x9000);
        assert_eq!(sregs.cr0 & (X86_CR0_CD | X86_CR0_NW), 0);
        assert_eq!(
            sregs.cr0 & (X86_CR0_PE | X86_CR0_PG),
            X86_CR0_PE | X86_CR0_PG
        );
        assert_eq!(sregs.cr4 & X86_CR4_PAE, X86_CR4_PAE);
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(sregs.cr3, 0x9000);
        assert_eq!((sregs.gdt.base, sregs.gdt.limit), (GDT_ADDR, 31));
        assert_eq!((sregs.idt.base, sregs.idt.limit), (IDT_ADDR, 7));
        assert_eq!((sregs.cs.selector, sregs.cs.l), (CODE_SELECTOR, 1));
        assert_eq!(
            (sregs.ss.selector, sregs.ds.selector),
            (DATA_SELECTOR, DATA_SELECTOR)
        );
        assert_eq!(sregs.tr.selector, TSS_SELECTOR);
    }

    #[test]
    fn boot_registers() {
        let regs = boot_regs(0x100_0000);
        assert_eq!(regs.rip, 0x100_0000);
        assert_eq!(regs.rsi, ZERO_PAGE_ADDR);
        assert_eq!(
            (regs.rsp, regs.rbp),
            (BOOT_STACK_POINTER, BOOT_STACK_POINTER)
        );
        assert_eq!(regs.rflags, 2);
        let fpu = boot_fpu();
        assert_eq!((fpu.fcw, fpu.mxcsr), (0x37f, 0x1f80));
    }

    #[test]
    fn boot_tables_land_in_memory() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let cr3 = write_boot_tables(&mem).unwrap();
        assert_eq!(cr3, super::super::layout::PML4_ADDR);
        let code: u64 = mem.read_obj(GuestAddress(GDT_ADDR + 8)).unwrap();
        assert_eq!(code, boot_gdt()[1]);
    }
}
