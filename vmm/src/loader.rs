//! Puts the guest kernel, initrd and command line into guest memory.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use crate::arch::layout::{low_ram_end, CMDLINE_ADDR, CMDLINE_MAX_SIZE, HIMEM_START};
use crate::arch::zero_page::InitrdPlacement;
use crate::GuestMemory;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// A bzImage's 64-bit entry point is this far into its protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
const PAGE_SIZE: u64 = 0x1000;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("kernel {}", path.display())]
    KernelFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kernel {} is neither an ELF vmlinux nor a bzImage", path.display())]
    NotAKernel { path: PathBuf },
    #[error("kernel {}", path.display())]
    Kernel {
        path: PathBuf,
        source: linux_loader::loader::Error,
    },
    #[error("initrd {}", path.display())]
    InitrdFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("initrd {} ({size} bytes) does not fit in guest memory: {available} bytes are free between the kernel and the end of low RAM", path.display())]
    InitrdTooLarge {
        path: PathBuf,
        size: u64,
        available: u64,
    },
    #[error("cannot copy initrd {} into guest memory", path.display())]
    InitrdCopy {
        path: PathBuf,
        source: GuestMemoryError,
    },
    #[error("kernel command line is {len} bytes; the limit is {max}", max = CMDLINE_MAX_SIZE - 1)]
    CmdlineTooLong { len: usize },
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("cannot write the kernel command line: {0}")]
    CmdlineCopy(GuestMemoryError),
}

/// A kernel in guest memory.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    /// 64-bit entry point.
    pub entry: u64,
    /// First byte after the kernel image.
    pub end: u64,
    /// The bzImage setup header, for the zero page.
    pub setup_header: Option<setup_header>,
}

/// Loads an ELF vmlinux or a bzImage at 1 MiB and up.
pub fn load_kernel(mem: &GuestMemory, path: &Path) -> Result<LoadedKernel, LoadError> {
    let file_err = |source| LoadError::KernelFile {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(file_err)?;
    let mut magic = [0u8; 4];
    let is_elf = match file.read_exact(&mut magic) {
        Ok(()) => &magic == ELF_MAGIC,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(LoadError::NotAKernel {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(file_err(e)),
    };
    let kernel_err = |source| LoadError::Kernel {
        path: path.to_path_buf(),
        source,
    };
    if is_elf {
        let result =
            Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(kernel_err)?;
        return Ok(LoadedKernel {
            entry: result.kernel_load.0,
            end: result.kernel_end,
            setup_header: None,
        });
    }
    match BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))) {
        Ok(result) => Ok(LoadedKernel {
            entry: result.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
            end: result.kernel_end,
            setup_header: result.setup_header,
        }),
        Err(linux_loader::loader::Error::Bzimage(
            linux_loader::loader::bzimage::Error::InvalidBzImage,
        )) => Err(LoadError::NotAKernel {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(kernel_err(e)),
    }
}

/// Where an initrd of `size` bytes goes: as high as possible below the end of low RAM,
/// page-aligned, and above the kernel.
pub fn initrd_address(mem_size: u64, kernel_end: u64, size: u64) -> Result<u64, u64> {
    let top = low_ram_end(mem_size);
    let bottom = kernel_end.next_multiple_of(PAGE_SIZE);
    let available = top.saturating_sub(bottom);
    match top.checked_sub(size) {
        Some(start) if start & !(PAGE_SIZE - 1) >= bottom => Ok(start & !(PAGE_SIZE - 1)),
        _ => Err(available),
    }
}

pub fn load_initrd(
    mem: &GuestMemory,
    mem_size: u64,
    kernel_end: u64,
    path: &Path,
) -> Result<InitrdPlacement, LoadError> {
    let file_err = |source| LoadError::InitrdFile {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(file_err)?;
    let size = file.metadata().map_err(file_err)?.len();
    let addr = initrd_address(mem_size, kernel_end, size).map_err(|available| {
        LoadError::InitrdTooLarge {
            path: path.to_path_buf(),
            size,
            available,
        }
    })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|source| LoadError::InitrdCopy {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(InitrdPlacement { addr, size })
}

/// Adds device fragments (`virtio_mmio.device=...`) to the user's command line, before a ` -- `
/// that starts init's arguments.
pub fn compose_cmdline(user: &str, fragments: &[String]) -> String {
    if fragments.is_empty() {
        return user.to_string();
    }
    let extra = fragments.join(" ");
    let (kernel_args, init_args) = match user.find(" -- ") {
        Some(at) => (&user[..at], Some(&user[at..])),
        None => (user, None),
    };
    let mut cmdline = kernel_args.trim_end().to_string();
    if !cmdline.is_empty() {
        cmdline.push(' ');
    }
    cmdline.push_str(&extra);
    cmdline.push_str(init_args.unwrap_or(""));
    cmdline
}

/// Writes the NUL-terminated command line; returns its length without the NUL.
pub fn write_cmdline(mem: &GuestMemory, cmdline: &str) -> Result<u32, LoadError> {
    if cmdline.contains('\0') {
        return Err(LoadError::CmdlineNul);
    }
    if cmdline.len() >= CMDLINE_MAX_SIZE {
        return Err(LoadError::CmdlineTooLong { len: cmdline.len() });
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_ADDR))
        .map_err(LoadError::CmdlineCopy)?;
    Ok(cmdline.len() as u32)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const MIB: u64 = 1 << 20;

    fn mem(size: u64) -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap()
    }

    fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rust-vm-loader-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(contents)
            .unwrap();
        path
    }

    #[test]
    fn initrd_goes_high_and_page_aligned() {
        assert_eq!(
            initrd_address(64 * MIB, 20 * MIB, 0x1800),
            Ok(64 * MIB - 0x2000)
        );
        // Above 3 GiB there is the MMIO gap: the initrd stays below it.
        assert_eq!(
            initrd_address(8192 * MIB, 20 * MIB, MIB),
            Ok(3072 * MIB - MIB)
        );
        assert_eq!(initrd_address(64 * MIB, 20 * MIB, 44 * MIB), Ok(20 * MIB));
        assert_eq!(
            initrd_address(64 * MIB, 20 * MIB, 44 * MIB + 1),
            Err(44 * MIB)
        );
        assert_eq!(initrd_address(16 * MIB, 20 * MIB, 1), Err(0));
    }

    #[test]
    fn initrd_is_copied_or_refused() {
        let mem = mem(8 * MIB);
        let path = temp_file("initrd", b"initramfs!");
        let placed = load_initrd(&mem, 8 * MIB, 2 * MIB, &path).unwrap();
        assert_eq!(
            placed,
            InitrdPlacement {
                addr: 8 * MIB - 0x1000,
                size: 10
            }
        );
        let mut back = [0u8; 10];
        mem.read_slice(&mut back, GuestAddress(placed.addr))
            .unwrap();
        assert_eq!(&back, b"initramfs!");

        let big = temp_file("big-initrd", &vec![0u8; 7 * MIB as usize]);
        let err = load_initrd(&mem, 8 * MIB, 2 * MIB, &big).unwrap_err();
        assert!(matches!(err, LoadError::InitrdTooLarge { size, .. } if size == 7 * MIB));
        assert!(err.to_string().contains("big-initrd"));
    }

    #[test]
    fn non_kernels_are_refused_by_name() {
        let mem = mem(32 * MIB);
        for (name, contents) in [("empty", &b""[..]), ("text", &b"#!/bin/sh\necho hi\n"[..])] {
            let path = temp_file(name, contents);
            let err = load_kernel(&mem, &path).unwrap_err();
            assert!(matches!(err, LoadError::NotAKernel { .. }), "{name}: {err}");
            assert!(err.to_string().contains(name));
        }
        let err = load_kernel(&mem, Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(matches!(err, LoadError::KernelFile { .. }));
        let bad_elf = temp_file("bad-elf", b"\x7fELF\x01\x01\x01garbage");
        assert!(matches!(
            load_kernel(&mem, &bad_elf),
            Err(LoadError::Kernel { .. })
        ));
    }

    #[test]
    fn cmdline_fragments_go_before_init_args() {
        let frags = vec!["virtio_mmio.device=4K@0xd0000000:5".to_string()];
        assert_eq!(compose_cmdline("console=ttyS0", &[]), "console=ttyS0");
        assert_eq!(
            compose_cmdline("console=ttyS0", &frags),
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5"
        );
        assert_eq!(
            compose_cmdline("quiet -- init-arg", &frags),
            "quiet virtio_mmio.device=4K@0xd0000000:5 -- init-arg"
        );
        assert_eq!(compose_cmdline("", &frags), frags[0]);
    }

    #[test]
    fn cmdline_is_nul_terminated_and_bounded() {
        let mem = mem(MIB);
        assert_eq!(write_cmdline(&mem, "console=ttyS0").unwrap(), 13);
        let mut back = [0u8; 14];
        mem.read_slice(&mut back, GuestAddress(CMDLINE_ADDR))
            .unwrap();
        assert_eq!(&back, b"console=ttyS0\0");
        let long = "x".repeat(CMDLINE_MAX_SIZE);
        assert!(matches!(
            write_cmdline(&mem, &long),
            Err(LoadError::CmdlineTooLong { .. })
        ));
        assert!(matches!(
            write_cmdline(&mem, "a\0b"),
            Err(LoadError::CmdlineNul)
        ));
    }
}
