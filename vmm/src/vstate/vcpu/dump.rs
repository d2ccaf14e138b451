//! The state of a stopped vCPU, for the error report: registers, segments, control registers and
//! the code bytes at RIP.

use std::fmt::Write as _;

use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use crate::GuestMemory;

/// All registers, and the instruction bytes at RIP when RIP translates to guest RAM.
pub fn dump_state(fd: &VcpuFd, mem: &GuestMemory) -> String {
    let mut out = String::new();
    match fd.get_regs() {
        Ok(r) => {
            let _ = write!(
                out,
                "rip={:#018x} rflags={:#018x}\n\
                 rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\n\
                 rsi={:#018x} rdi={:#018x} rsp={:#018x} rbp={:#018x}\n\
                 r8 ={:#018x} r9 ={:#018x} r10={:#018x} r11={:#018x}\n\
                 r12={:#018x} r13={:#018x} r14={:#018x} r15={:#018x}\n",
                r.rip,
                r.rflags,
                r.rax,
                r.rbx,
                r.rcx,
                r.rdx,
                r.rsi,
                r.rdi,
                r.rsp,
                r.rbp,
                r.r8,
                r.r9,
                r.r10,
                r.r11,
                r.r12,
                r.r13,
                r.r14,
                r.r15
            );
            dump_code(fd, mem, &mut out, r.rip);
        }
        Err(e) => {
            let _ = writeln!(out, "KVM_GET_REGS failed: {e}");
        }
    }
    match fd.get_sregs() {
        Ok(s) => {
            for (name, seg) in [
                ("cs", s.cs),
                ("ds", s.ds),
                ("es", s.es),
                ("fs", s.fs),
                ("gs", s.gs),
                ("ss", s.ss),
                ("tr", s.tr),
                ("ldt", s.ldt),
            ] {
                let _ = writeln!(
                    out,
                    "{name:<3}={:#06x} base={:#018x} limit={:#010x} type={:#x} dpl={} l={} db={} present={}",
                    seg.selector, seg.base, seg.limit, seg.type_, seg.dpl, seg.l, seg.db, seg.present
                );
            }
            let _ = write!(
                out,
                "gdt base={:#018x} limit={:#06x}  idt base={:#018x} limit={:#06x}\n\
                 cr0={:#018x} cr2={:#018x} cr3={:#018x} cr4={:#018x}\n\
                 cr8={:#018x} efer={:#018x} apic_base={:#018x}",
                s.gdt.base,
                s.gdt.limit,
                s.idt.base,
                s.idt.limit,
                s.cr0,
                s.cr2,
                s.cr3,
                s.cr4,
                s.cr8,
                s.efer,
                s.apic_base
            );
        }
        Err(e) => {
            let _ = write!(out, "KVM_GET_SREGS failed: {e}");
        }
    }
    out
}

fn dump_code(fd: &VcpuFd, mem: &GuestMemory, out: &mut String, rip: u64) {
    let Ok(translation) = fd.translate_gva(rip) else {
        return;
    };
    if translation.valid == 0 {
        return;
    }
    let mut code = [0u8; 16];
    if mem
        .read_slice(&mut code, GuestAddress(translation.physical_address))
        .is_ok()
    {
        let _ = writeln!(
            out,
            "code at rip (phys {:#x}): {:02x?}",
            translation.physical_address, code
        );
    }
}
