//! Identity-mapped page tables for the 64-bit entry: the first 4 GiB with 2 MiB pages.

use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use super::layout::{PDPT_ADDR, PD_ADDR, PD_COUNT, PML4_ADDR};
use crate::GuestMemory;

const PRESENT_WRITABLE: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;
const ENTRIES_PER_TABLE: u64 = 512;

/// Writes the PML4, PDPT and page directories; returns the value for CR3.
pub fn write_identity_page_tables(mem: &GuestMemory) -> Result<u64, GuestMemoryError> {
    mem.write_obj(PDPT_ADDR | PRESENT_WRITABLE, GuestAddress(PML4_ADDR))?;
    for pd in 0..PD_COUNT {
        let pd_addr = PD_ADDR + pd * 0x1000;
        mem.write_obj(pd_addr | PRESENT_WRITABLE, GuestAddress(PDPT_ADDR + pd * 8))?;
        let mut table = Vec::with_capacity(0x1000);
        for entry in 0..ENTRIES_PER_TABLE {
            let phys = ((pd * ENTRIES_PER_TABLE + entry) << 21) | PAGE_SIZE_2M | PRESENT_WRITABLE;
            table.extend_from_slice(&phys.to_le_bytes());
        }
        mem.write_slice(&table, GuestAddress(pd_addr))?;
    }
    Ok(PML4_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(mem: &GuestMemory, addr: u64) -> u64 {
        mem.read_obj(GuestAddress(addr)).unwrap()
    }

    /// Walks the tables as the MMU would for a 2 MiB page.
    fn translate(mem: &GuestMemory, cr3: u64, virt: u64) -> Option<u64> {
        let pml4e = read(mem, cr3 + ((virt >> 39) & 0x1ff) * 8);
        if pml4e & 1 == 0 {
            return None;
        }
        let pdpte = read(mem, (pml4e & !0xfff) + ((virt >> 30) & 0x1ff) * 8);
        if pdpte & 1 == 0 {
            return None;
        }
        let pde = read(mem, (pdpte & !0xfff) + ((virt >> 21) & 0x1ff) * 8);
        if pde & 1 == 0 || pde & PAGE_SIZE_2M == 0 {
            return None;
        }
        Some((pde & !0x1f_ffff & !(1 << 63)) | (virt & 0x1f_ffff))
    }

    #[test]
    fn maps_the_first_4_gib_one_to_one() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let cr3 = write_identity_page_tables(&mem).unwrap();
        assert_eq!(cr3, PML4_ADDR);
        for addr in [
            0,
            0x1000,
            0x100_0000,
            0x3fff_ffff,
            0x4000_0000,
            0xbfff_f000,
            0xffff_ffff,
        ] {
            assert_eq!(translate(&mem, cr3, addr), Some(addr), "{addr:#x}");
        }
        assert_eq!(translate(&mem, cr3, 0x1_0000_0000), None);
        assert_eq!(read(&mem, PD_ADDR) & 0xfff, 0x83);
    }

    #[test]
    fn fails_without_memory_for_the_tables() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x9000)]).unwrap();
        assert!(write_identity_page_tables(&mem).is_err());
    }
}
