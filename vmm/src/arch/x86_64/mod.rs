//! x86_64 specifics: memory layout, boot protocol structures, boot register state, CPUID.

pub mod cpuid;
pub mod emulation;
pub mod gdt;
pub mod insn;
pub mod interrupts;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod page_walk;
pub mod paging;
pub mod regs;
pub mod zero_page;
