//! Guest RAM: anonymous private memory, or one memfd mapped shared when a vhost-user back-end
//! (virtiofsd) must map the same pages in its own process.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use vm_memory::{FileOffset, GuestAddress};

use crate::GuestMemory;

/// The memfd's name, as /proc/PID/fd and /proc/PID/maps show it.
const MEMFD_NAME: &CStr = c"rust-vm-guest-ram";

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot create the memfd that backs guest memory")]
    Memfd(#[source] io::Error),
    #[error("cannot size the guest memory memfd to {bytes} bytes")]
    Size {
        bytes: u64,
        #[source]
        source: io::Error,
    },
    #[error("cannot map the guest memory regions")]
    Map(#[source] vm_memory::mmap::FromRangesError),
}

/// How guest RAM is backed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Private anonymous memory: only the VMM and KVM see it.
    Anonymous,
    /// One memfd, each region at its own file offset, mapped `MAP_SHARED`, so that a vhost-user
    /// back-end given the fd sees what the guest writes.
    SharedMemfd,
}

/// Maps guest RAM for `ranges` (sorted by address, as `arch::layout::ram_regions` gives them).
pub fn create(
    ranges: &[(GuestAddress, usize)],
    backing: Backing,
) -> Result<GuestMemory, MemoryError> {
    match backing {
        Backing::Anonymous => GuestMemory::from_ranges(ranges).map_err(MemoryError::Map),
        Backing::SharedMemfd => {
            let file = Arc::new(memfd()?);
            let bytes: u64 = ranges.iter().map(|&(_, size)| size as u64).sum();
            file.set_len(bytes)
                .map_err(|source| MemoryError::Size { bytes, source })?;
            let mut offset = 0u64;
            let regions: Vec<_> = ranges
                .iter()
                .map(|&(addr, size)| {
                    let region = (addr, size, Some(FileOffset::from_arc(file.clone(), offset)));
                    offset += size as u64;
                    region
                })
                .collect();
            GuestMemory::from_ranges_with_files(regions).map_err(MemoryError::Map)
        }
    }
}

fn memfd() -> Result<File, MemoryError> {
    // SAFETY: the name is a NUL-terminated string; the call has no other memory effects.
    let fd = unsafe { libc::memfd_create(MEMFD_NAME.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(MemoryError::Memfd(io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion, MmapRegion};

    use super::*;

    const RANGES: [(GuestAddress, usize); 2] = [
        (GuestAddress(0), 0x20_0000),
        (GuestAddress(0x1_0000_0000), 0x10_0000),
    ];

    #[test]
    fn anonymous_memory_has_no_file() {
        let mem = create(&RANGES, Backing::Anonymous).unwrap();
        assert_eq!(mem.num_regions(), 2);
        assert!(mem.iter().all(|r| r.file_offset().is_none()));
        mem.write_obj(0xabu8, GuestAddress(0x1_0000_0010)).unwrap();
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0x1_0000_0010)).unwrap(),
            0xab
        );
    }

    #[test]
    fn memfd_memory_puts_each_region_at_its_own_offset_of_one_file() {
        let mem = create(&RANGES, Backing::SharedMemfd).unwrap();
        let files: Vec<_> = mem
            .iter()
            .map(|r| r.file_offset().unwrap().clone())
            .collect();
        assert_eq!(files[0].file().as_raw_fd(), files[1].file().as_raw_fd());
        assert_eq!((files[0].start(), files[1].start()), (0, 0x20_0000));
        assert_eq!(files[0].file().metadata().unwrap().len(), 0x30_0000);

        // A second shared mapping of the file, as a back-end would make, sees guest writes.
        mem.write_slice(b"guest", GuestAddress(0x1_0000_0100))
            .unwrap();
        let other = MmapRegion::<()>::from_file(files[1].clone(), 0x10_0000).unwrap();
        // SAFETY: the mapping is 1 MiB long and alive for the read.
        let seen = unsafe { std::slice::from_raw_parts(other.as_ptr().add(0x100), 5) };
        assert_eq!(seen, b"guest");
    }
}
