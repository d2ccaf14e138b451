//! Guest linear to guest physical translation by walking the guest's own page tables in guest
//! memory, as the CPU would for an instruction fetch. Used to read the instruction at RIP.

use vm_memory::{Bytes, GuestAddress};

use crate::GuestMemory;

const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;

const PTE_PRESENT: u64 = 1;
const PTE_PAGE_SIZE: u64 = 1 << 7;
/// Physical address bits 51:12 of a table entry (or of CR3).
const PTE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const PAGE_SIZE: u64 = 4096;

/// The registers that define the guest's paging mode and root.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagingRegs {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

impl From<&kvm_bindings::kvm_sregs> for PagingRegs {
    fn from(sregs: &kvm_bindings::kvm_sregs) -> Self {
        Self {
            cr0: sregs.cr0,
            cr3: sregs.cr3,
            cr4: sregs.cr4,
            efer: sregs.efer,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    #[error("{0} paging is not supported (only long mode or paging off)")]
    UnsupportedMode(&'static str),
    #[error("linear address {0:#x} is not canonical")]
    NonCanonical(u64),
    #[error("linear address {linear:#x} is not mapped: the level-{level} entry at guest physical {entry_addr:#x} is not present")]
    NotPresent {
        linear: u64,
        level: u8,
        entry_addr: u64,
    },
    #[error("guest physical address {0:#x} is outside guest memory")]
    OutsideMemory(u64),
}

/// Translates `linear` with the guest's paging registers.
pub fn translate(mem: &GuestMemory, regs: &PagingRegs, linear: u64) -> Result<u64, WalkError> {
    if regs.cr0 & CR0_PG == 0 {
        return Ok(linear);
    }
    if regs.efer & EFER_LMA == 0 {
        return Err(WalkError::UnsupportedMode(if regs.cr4 & CR4_PAE != 0 {
            "32-bit PAE"
        } else {
            "32-bit"
        }));
    }
    let levels: u8 = if regs.cr4 & CR4_LA57 != 0 { 5 } else { 4 };
    let va_bits = 12 + 9 * u32::from(levels);
    let sign_extended = ((linear << (64 - va_bits)) as i64 >> (64 - va_bits)) as u64;
    if sign_extended != linear {
        return Err(WalkError::NonCanonical(linear));
    }

    let mut table = regs.cr3 & PTE_ADDR_MASK;
    for level in (1..=levels).rev() {
        let shift = 12 + 9 * u32::from(level - 1);
        let entry_addr = table + ((linear >> shift) & 0x1ff) * 8;
        let entry: u64 = mem
            .read_obj(GuestAddress(entry_addr))
            .map_err(|_| WalkError::OutsideMemory(entry_addr))?;
        if entry & PTE_PRESENT == 0 {
            return Err(WalkError::NotPresent {
                linear,
                level,
                entry_addr,
            });
        }
        // 1 GiB pages at level 3, 2 MiB pages at level 2.
        if (level == 2 || level == 3) && entry & PTE_PAGE_SIZE != 0 {
            let offset_mask = (1u64 << shift) - 1;
            return Ok((entry & PTE_ADDR_MASK & !offset_mask) | (linear & offset_mask));
        }
        table = entry & PTE_ADDR_MASK;
    }
    Ok(table | (linear & (PAGE_SIZE - 1)))
}

/// Reads up to `buf.len()` bytes from `linear` on, page by page. Stops early at the first page
/// that does not translate (an instruction may end before it); fails only if the first does not.
pub fn read_linear(
    mem: &GuestMemory,
    regs: &PagingRegs,
    linear: u64,
    buf: &mut [u8],
) -> Result<usize, WalkError> {
    let mut done = 0;
    while done < buf.len() {
        let addr = linear.wrapping_add(done as u64);
        let in_page = (PAGE_SIZE - (addr & (PAGE_SIZE - 1))) as usize;
        let chunk = in_page.min(buf.len() - done);
        let read = translate(mem, regs, addr).and_then(|phys| {
            mem.read_slice(&mut buf[done..done + chunk], GuestAddress(phys))
                .map_err(|_| WalkError::OutsideMemory(phys))
        });
        match read {
            Ok(()) => done += chunk,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PML4: u64 = 0x1000;
    const PDPT: u64 = 0x2000;
    const PD: u64 = 0x3000;
    const PT: u64 = 0x4000;
    const KERNEL_VA: u64 = 0xffff_ffff_8000_0000;

    fn mem() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 0x80_0000)]).unwrap()
    }

    fn set(mem: &GuestMemory, table: u64, index: u64, entry: u64) {
        mem.write_obj(entry, GuestAddress(table + index * 8))
            .unwrap();
    }

    fn long_mode(cr3: u64) -> PagingRegs {
        PagingRegs {
            cr0: CR0_PG | 1,
            cr3,
            cr4: CR4_PAE,
            efer: EFER_LMA | 1 << 8,
        }
    }

    /// KERNEL_VA + 2 MiB -> 4 KiB pages at 0x20_0000 (page 0) and 0x50_0000 (page 1);
    /// KERNEL_VA -> a 2 MiB page at 0x60_0000; low 1 GiB identity-mapped as a 1 GiB page.
    fn kernel_tables(mem: &GuestMemory) -> PagingRegs {
        set(mem, PML4, 0, PDPT | 3);
        set(mem, PDPT, 0, 0x83); // 1 GiB page at 0
        set(mem, PML4, 511, PDPT | 3);
        set(mem, PDPT, 510, PD | 3);
        set(mem, PD, 0, 0x60_0000 | 0x83 | 1 << 12); // PAT bit must not leak into the address
        set(mem, PD, 1, PT | 3);
        set(mem, PT, 0, 0x20_0000 | 3);
        set(mem, PT, 1, 0x50_0000 | 1 << 63 | 3); // NX does not matter for the address
        long_mode(PML4 | 0x5) // PCID bits in CR3 are not address bits
    }

    #[test]
    fn walks_4k_2m_and_1g_pages() {
        let mem = mem();
        let regs = kernel_tables(&mem);
        assert_eq!(translate(&mem, &regs, 0x12_3456), Ok(0x12_3456));
        assert_eq!(translate(&mem, &regs, KERNEL_VA + 0x1_2345), Ok(0x61_2345));
        assert_eq!(translate(&mem, &regs, KERNEL_VA + 0x20_0123), Ok(0x20_0123));
        assert_eq!(translate(&mem, &regs, KERNEL_VA + 0x20_1ff0), Ok(0x50_0ff0));
    }

    #[test]
    fn reports_holes_and_bad_addresses() {
        let mem = mem();
        let regs = kernel_tables(&mem);
        assert_eq!(
            translate(&mem, &regs, KERNEL_VA + 0x20_2000),
            Err(WalkError::NotPresent {
                linear: KERNEL_VA + 0x20_2000,
                level: 1,
                entry_addr: PT + 16
            })
        );
        assert!(matches!(
            translate(&mem, &regs, 0x0000_7000_0000_0000),
            Err(WalkError::NotPresent { level: 4, .. })
        ));
        assert_eq!(
            translate(&mem, &regs, 0x0000_8000_0000_0000),
            Err(WalkError::NonCanonical(0x0000_8000_0000_0000))
        );
        let bad_root = long_mode(0x4000_0000);
        assert_eq!(
            translate(&mem, &bad_root, 0),
            Err(WalkError::OutsideMemory(0x4000_0000))
        );
        let pae = PagingRegs {
            efer: 0,
            ..kernel_tables(&mem)
        };
        assert_eq!(
            translate(&mem, &pae, 0),
            Err(WalkError::UnsupportedMode("32-bit PAE"))
        );
    }

    #[test]
    fn five_level_paging_and_paging_off() {
        let mem = mem();
        let mut regs = kernel_tables(&mem);
        set(&mem, 0x5000, 511, PML4 | 3);
        regs.cr3 = 0x5000;
        regs.cr4 |= CR4_LA57;
        let hole = 0xff7f_ffff_8000_0000;
        assert_eq!(
            translate(&mem, &regs, hole),
            Err(WalkError::NotPresent {
                linear: hole,
                level: 5,
                entry_addr: 0x5000 + 0x17f * 8
            })
        );
        // 0xff80_.. is canonical with 57 bits, not with 48.
        assert!(translate(&mem, &regs, 0xff80_0000_0000_0000).is_err());
        assert_eq!(
            translate(&mem, &kernel_tables(&mem), 0xff80_0000_0000_0000),
            Err(WalkError::NonCanonical(0xff80_0000_0000_0000))
        );
        assert_eq!(translate(&mem, &regs, KERNEL_VA + 0x10), Ok(0x60_0010));
        assert_eq!(translate(&mem, &PagingRegs::default(), 0x1234), Ok(0x1234));
    }

    #[test]
    fn reads_across_pages_and_stops_at_a_hole() {
        let mem = mem();
        let regs = kernel_tables(&mem);
        mem.write_slice(&[1, 2, 3, 4], GuestAddress(0x20_0ffc))
            .unwrap();
        mem.write_slice(&[5, 6], GuestAddress(0x50_0000)).unwrap();
        let mut buf = [0u8; 6];
        assert_eq!(
            read_linear(&mem, &regs, KERNEL_VA + 0x20_0ffc, &mut buf),
            Ok(6)
        );
        assert_eq!(buf, [1, 2, 3, 4, 5, 6]);
        // Page 2 is not mapped: the read ends at the page boundary.
        mem.write_slice(&[7, 8], GuestAddress(0x50_0ffe)).unwrap();
        let mut buf = [0u8; 15];
        assert_eq!(
            read_linear(&mem, &regs, KERNEL_VA + 0x20_1ffe, &mut buf),
            Ok(2)
        );
        assert_eq!(&buf[..2], &[7, 8]);
        assert!(read_linear(&mem, &regs, KERNEL_VA + 0x20_2000, &mut buf).is_err());
    }
}
