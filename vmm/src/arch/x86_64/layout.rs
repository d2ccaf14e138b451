//! The x86_64 guest physical memory map. docs/architecture.md has the same map as a table.

use vm_memory::GuestAddress;

/// Global descriptor table: null, 64-bit code (0x08), data (0x10), TSS (0x18).
pub const GDT_ADDR: u64 = 0x500;
/// An empty interrupt descriptor table; the kernel installs its own before enabling interrupts.
pub const IDT_ADDR: u64 = 0x520;
/// `struct boot_params` ("zero page") handed to the kernel in RSI.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables: PML4, one PDPT and four page directories of 2 MiB pages (first 4 GiB).
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
pub const PD_COUNT: u64 = 4;
/// Kernel command line, NUL-terminated.
pub const CMDLINE_ADDR: u64 = 0x20000;
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// Extended BIOS data area: holds the MP table; `[EBDA_START, HIMEM_START)` is reserved in e820.
pub const EBDA_START: u64 = 0x9fc00;
/// Where the kernel goes: the first byte above the legacy 1 MiB.
pub const HIMEM_START: u64 = 0x10_0000;

/// The 32-bit MMIO gap: no RAM here, RAM beyond it continues at 4 GiB.
pub const MMIO_GAP_START: u64 = 3 << 30;
pub const MMIO_GAP_END: u64 = 4 << 30;

/// virtio-mmio device slots: one 4 KiB window each, starting at this address.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// GSI of the first virtio-mmio slot; slot `i` uses `VIRTIO_MMIO_FIRST_GSI + i`.
pub const VIRTIO_MMIO_FIRST_GSI: u32 = 5;
/// The IOAPIC has 24 pins; GSIs above this are not routed.
pub const MAX_GSI: u32 = 23;

pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
/// KVM needs three pages of guest address space for the VMX real-mode TSS; keep it in the gap.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;

/// Legacy devices on the port I/O bus.
pub const SERIAL_COM1_PORT: u64 = 0x3f8;
pub const SERIAL_COM1_PORT_LEN: u64 = 8;
pub const SERIAL_COM1_GSI: u32 = 4;
pub const I8042_PORT: u64 = 0x60;
pub const I8042_PORT_LEN: u64 = 5;

/// Highest vCPU count: APIC IDs are 8 bits in the MP table and the IOAPIC takes the next ID.
// The configuration's bound, which the checks above keep within a u8.
#[allow(clippy::cast_possible_truncation)]
pub const MAX_VCPUS: u8 = vmm_config::MAX_VCPUS as u8;
const _: () = assert!(vmm_config::MAX_VCPUS <= u8::MAX as u32);

/// The guest RAM regions for `mem_size` bytes of memory: `[0, min(size, 3 GiB))` and, when
/// larger, the rest from 4 GiB up.
pub fn ram_regions(mem_size: u64) -> Vec<(GuestAddress, u64)> {
    let low = mem_size.min(MMIO_GAP_START);
    let mut regions = vec![(GuestAddress(0), low)];
    if mem_size > MMIO_GAP_START {
        regions.push((GuestAddress(MMIO_GAP_END), mem_size - MMIO_GAP_START));
    }
    regions
}

/// End (exclusive) of the RAM below the MMIO gap.
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO_GAP_START)
}

/// Base address and GSI of virtio-mmio slot `index`, if the slot exists.
pub fn virtio_mmio_slot(index: usize) -> Option<(u64, u32)> {
    let index = u32::try_from(index).ok()?;
    let gsi = VIRTIO_MMIO_FIRST_GSI.checked_add(index)?;
    (gsi <= MAX_GSI).then(|| (VIRTIO_MMIO_BASE + u64::from(index) * VIRTIO_MMIO_SIZE, gsi))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn small_memory_is_one_region() {
        assert_eq!(ram_regions(128 * MIB), vec![(GuestAddress(0), 128 * MIB)]);
        assert_eq!(
            ram_regions(MMIO_GAP_START),
            vec![(GuestAddress(0), MMIO_GAP_START)]
        );
    }

    #[test]
    fn memory_past_the_gap_continues_at_4_gib() {
        let regions = ram_regions(3584 * MIB);
        assert_eq!(
            regions,
            vec![
                (GuestAddress(0), 3072 * MIB),
                (GuestAddress(4096 * MIB), 512 * MIB)
            ]
        );
        let total: u64 = regions.iter().map(|r| r.1).sum();
        assert_eq!(total, 3584 * MIB);
    }

    #[test]
    fn fixed_structures_do_not_overlap() {
        let pd_end = PD_ADDR + PD_COUNT * 0x1000;
        let ordered = [
            (GDT_ADDR, IDT_ADDR),
            (IDT_ADDR, IDT_ADDR + 8),
            (ZERO_PAGE_ADDR, ZERO_PAGE_ADDR + 0x1000),
            (BOOT_STACK_POINTER - 0x100, BOOT_STACK_POINTER),
            (PML4_ADDR, PDPT_ADDR),
            (PDPT_ADDR, PD_ADDR),
            (PD_ADDR, pd_end),
            (CMDLINE_ADDR, CMDLINE_ADDR + CMDLINE_MAX_SIZE as u64),
            (EBDA_START, HIMEM_START),
        ];
        for pair in ordered.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{pair:x?} overlap");
        }
    }

    #[test]
    fn virtio_slots_stay_in_the_gap_and_on_ioapic_pins() {
        assert_eq!(virtio_mmio_slot(0), Some((0xd000_0000, 5)));
        assert_eq!(virtio_mmio_slot(2), Some((0xd000_2000, 7)));
        let last = virtio_mmio_slot(18).unwrap();
        assert_eq!(last.1, MAX_GSI);
        assert!(last.0 + VIRTIO_MMIO_SIZE <= IOAPIC_ADDR);
        assert_eq!(virtio_mmio_slot(19), None);
    }
}
