//! x86_64 specifics: memory layout, boot protocol structures, boot register state, CPUID.

pub mod cpuid;
pub mod gdt;
pub mod interrupts;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod paging;
pub mod regs;
pub mod zero_page;
