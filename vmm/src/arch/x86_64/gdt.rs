//! The boot GDT and the KVM segment registers derived from it.

use kvm_bindings::kvm_segment;

/// Segment selectors of the boot GDT (index * 8).
pub const CODE_SELECTOR: u16 = 0x08;
pub const DATA_SELECTOR: u16 = 0x10;
pub const TSS_SELECTOR: u16 = 0x18;

/// The boot GDT: null, 64-bit code, data, TSS. All flat (base 0, limit 4 GiB).
pub fn boot_gdt() -> [u64; 4] {
    [
        0,
        gdt_entry(0xa09b, 0, 0xfffff), // code: present, DPL 0, exec/read, L=1, G=1
        gdt_entry(0xc093, 0, 0xfffff), // data: present, DPL 0, read/write, D/B=1, G=1
        gdt_entry(0x808b, 0, 0xfffff), // TSS: present, busy 64-bit TSS, G=1
    ]
}

/// Packs a descriptor. `flags` holds the access byte in bits 0..8 and the G/DB/L/AVL nibble in
/// bits 12..16, as in the descriptor's bytes 5 and 6.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    let flags = flags as u64;
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

fn bits(entry: u64, shift: u32, width: u32) -> u64 {
    (entry >> shift) & ((1 << width) - 1)
}

/// The KVM view of descriptor `entry` loaded with `selector`. KVM wants the limit in bytes.
pub fn segment_from_gdt(entry: u64, selector: u16) -> kvm_segment {
    let granular = bits(entry, 55, 1) as u8;
    let raw_limit = (bits(entry, 0, 16) | (bits(entry, 48, 4) << 16)) as u32;
    let limit = if granular == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    kvm_segment {
        base: bits(entry, 16, 24) | (bits(entry, 56, 8) << 24),
        limit,
        selector,
        type_: bits(entry, 40, 4) as u8,
        present: bits(entry, 47, 1) as u8,
        dpl: bits(entry, 45, 2) as u8,
        db: bits(entry, 54, 1) as u8,
        s: bits(entry, 44, 1) as u8,
        l: bits(entry, 53, 1) as u8,
        g: granular,
        avl: bits(entry, 52, 1) as u8,
        unusable: u8::from(bits(entry, 47, 1) == 0),
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_segment_is_64_bit_ring_0() {
        let gdt = boot_gdt();
        assert_eq!(gdt[1], 0x00af_9b00_0000_ffff);
        let cs = segment_from_gdt(gdt[1], CODE_SELECTOR);
        assert_eq!((cs.l, cs.db, cs.dpl, cs.s, cs.present), (1, 0, 0, 1, 1));
        assert_eq!(cs.type_, 0xb);
        assert_eq!((cs.base, cs.limit, cs.g), (0, 0xffff_ffff, 1));
    }

    #[test]
    fn data_and_tss_segments() {
        let gdt = boot_gdt();
        assert_eq!(gdt[2], 0x00cf_9300_0000_ffff);
        let ds = segment_from_gdt(gdt[2], DATA_SELECTOR);
        assert_eq!((ds.l, ds.db, ds.type_, ds.s), (0, 1, 3, 1));
        let tr = segment_from_gdt(gdt[3], TSS_SELECTOR);
        assert_eq!((tr.type_, tr.s, tr.present, tr.unusable), (0xb, 0, 1, 0));
    }

    #[test]
    fn base_and_limit_round_trip() {
        let entry = gdt_entry(0x4093, 0x1234_5678, 0xabcde);
        let seg = segment_from_gdt(entry, 0);
        assert_eq!(seg.base, 0x1234_5678);
        assert_eq!(seg.limit, 0xabcde);
        assert_eq!(seg.g, 0);
        assert_eq!(seg.db, 1);
    }
}
