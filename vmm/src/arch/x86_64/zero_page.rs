//! The zero page (`struct boot_params`) of the Linux x86 boot protocol, with the e820 memory map.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};

use super::layout::{EBDA_START, HIMEM_START, MMIO_GAP_END, MMIO_GAP_START};

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
/// "Undefined" boot loader id: we are not one the kernel knows.
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;
/// `loadflags` bit: the protected-mode kernel was loaded at 0x100000.
const LOADED_HIGH: u8 = 0x1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ZeroPageError {
    #[error("guest memory of {0} bytes is too small: at least {min} bytes are needed", min = HIMEM_START * 2)]
    MemoryTooSmall(u64),
    #[error("the e820 map needs more than {0} entries")]
    TooManyE820Entries(usize),
}

/// One e820 range, `[addr, addr + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The e820 map for `mem_size` bytes of guest RAM laid out by `layout::ram_regions`.
///
/// Every byte of guest RAM is in exactly one entry; the legacy EBDA/VGA/BIOS window below 1 MiB
/// is reported reserved, so the sum of all entries equals the configured memory size.
pub fn e820_map(mem_size: u64) -> Result<Vec<E820Entry>, ZeroPageError> {
    if mem_size < HIMEM_START * 2 {
        return Err(ZeroPageError::MemoryTooSmall(mem_size));
    }
    let ram = |addr, end: u64| E820Entry {
        addr,
        size: end - addr,
        kind: E820_RAM,
    };
    let mut map = vec![
        ram(0, EBDA_START),
        E820Entry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820_RESERVED,
        },
        ram(HIMEM_START, mem_size.min(MMIO_GAP_START)),
    ];
    if mem_size > MMIO_GAP_START {
        map.push(ram(
            MMIO_GAP_END,
            MMIO_GAP_END + (mem_size - MMIO_GAP_START),
        ));
    }
    Ok(map)
}

/// Where the kernel finds its initrd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitrdPlacement {
    pub addr: u64,
    pub size: u64,
}

/// Inputs of the zero page besides the memory map.
#[derive(Clone, Copy, Debug, Default)]
pub struct BootInfo {
    /// Setup header from a bzImage; `None` for an ELF vmlinux.
    pub setup_header: Option<setup_header>,
    pub cmdline_addr: u64,
    /// Length of the command line without its NUL.
    pub cmdline_len: u32,
    pub initrd: Option<InitrdPlacement>,
}

/// Builds the zero page for a 64-bit direct boot.
pub fn build_zero_page(e820: &[E820Entry], info: &BootInfo) -> Result<boot_params, ZeroPageError> {
    let mut params = boot_params::default();
    if let Some(header) = info.setup_header {
        params.hdr = header;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = KERNEL_HDR_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.loadflags |= LOADED_HIGH;
    // The boot protocol has 32-bit fields; everything we place lives below 4 GiB.
    params.hdr.cmd_line_ptr = info.cmdline_addr as u32;
    params.hdr.cmdline_size = info.cmdline_len;
    if let Some(initrd) = info.initrd {
        params.hdr.ramdisk_image = initrd.addr as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }

    if e820.len() > params.e820_table.len() {
        return Err(ZeroPageError::TooManyE820Entries(e820.len()));
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(e820) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind,
        };
    }
    params.e820_entries = e820.len() as u8;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn e820_below_the_gap() {
        let map = e820_map(512 * MIB).unwrap();
        assert_eq!(
            map,
            vec![
                E820Entry {
                    addr: 0,
                    size: 0x9fc00,
                    kind: E820_RAM
                },
                E820Entry {
                    addr: 0x9fc00,
                    size: 0x60400,
                    kind: E820_RESERVED
                },
                E820Entry {
                    addr: 0x10_0000,
                    size: 511 * MIB,
                    kind: E820_RAM
                },
            ]
        );
        assert_eq!(map.iter().map(|e| e.size).sum::<u64>(), 512 * MIB);
    }

    #[test]
    fn e820_across_the_gap() {
        let map = e820_map(3584 * MIB).unwrap();
        assert_eq!(map.len(), 4);
        assert_eq!(map[2].addr + map[2].size, 3 << 30);
        assert_eq!(
            map[3],
            E820Entry {
                addr: 4 << 30,
                size: 512 * MIB,
                kind: E820_RAM
            }
        );
        assert_eq!(map.iter().map(|e| e.size).sum::<u64>(), 3584 * MIB);
    }

    #[test]
    fn e820_refuses_tiny_memory() {
        assert_eq!(e820_map(MIB), Err(ZeroPageError::MemoryTooSmall(MIB)));
    }

    #[test]
    fn zero_page_for_elf_kernel() {
        let map = e820_map(256 * MIB).unwrap();
        let info = BootInfo {
            setup_header: None,
            cmdline_addr: 0x20000,
            cmdline_len: 14,
            initrd: Some(InitrdPlacement {
                addr: 0xf00_0000,
                size: 0x1234,
            }),
        };
        let params = build_zero_page(&map, &info).unwrap();
        let hdr = params.hdr;
        assert_eq!({ hdr.boot_flag }, 0xaa55);
        assert_eq!({ hdr.header }, 0x5372_6448);
        assert_eq!({ hdr.type_of_loader }, 0xff);
        assert_eq!({ hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ hdr.cmdline_size }, 14);
        assert_eq!({ hdr.ramdisk_image }, 0xf00_0000);
        assert_eq!({ hdr.ramdisk_size }, 0x1234);
        assert_eq!({ hdr.kernel_alignment }, 0x100_0000);
        assert_eq!(params.e820_entries, 3);
        let third = params.e820_table[2];
        assert_eq!(
            ({ third.addr }, { third.size }, { third.r#type }),
            (HIMEM_START, 255 * MIB, E820_RAM)
        );
    }

    #[test]
    fn zero_page_keeps_bzimage_header() {
        let header = setup_header {
            header: KERNEL_HDR_MAGIC,
            version: 0x020f,
            kernel_alignment: 0x20_0000,
            ..Default::default()
        };
        let info = BootInfo {
            setup_header: Some(header),
            ..Default::default()
        };
        let params = build_zero_page(&e820_map(64 * MIB).unwrap(), &info).unwrap();
        assert_eq!({ params.hdr.version }, 0x020f);
        assert_eq!({ params.hdr.kernel_alignment }, 0x20_0000);
        assert_eq!({ params.hdr.type_of_loader }, 0xff);
        assert_eq!({ params.hdr.ramdisk_image }, 0);
    }
}
