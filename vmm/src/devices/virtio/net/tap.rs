//! The host side of a virtio-net device: a tap the VMM inherits as an open descriptor.
//!
//! The tap carries a 12-byte virtio-net header before every frame (IFF_VNET_HDR with
//! TUNSETVNETHDRSZ 12), the same layout as the guest's `virtio_net_hdr_v1`, so headers pass
//! through unchanged in both directions.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};

use super::device::VNET_HDR_LEN;

/// The flags TUNSETIFF must have been given for the header layout above.
pub const REQUIRED_FLAGS: i16 = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;

/// What the device needs from its tap; tests put a socket in its place.
pub trait TapIo: AsRawFd + Send {
    /// Reads one header-prefixed frame without blocking.
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one header-prefixed frame without blocking.
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize>;
    /// Sets which offloads (TUN_F_*) the tap may hand over in the frames it gives us.
    fn set_offload(&mut self, flags: u32) -> io::Result<()>;
}

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("not an open descriptor")]
    NotOpen(#[source] io::Error),
    #[error("not an attached tun/tap descriptor (TUNGETIFF failed)")]
    NotATap(#[source] io::Error),
    #[error(
        "its flags are {0:#x}; a tap opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR ({REQUIRED_FLAGS:#x}) is needed"
    )]
    WrongFlags(i16),
    #[error("cannot make it non-blocking")]
    NonBlocking(#[source] io::Error),
    #[error("cannot set its virtio-net header size (TUNSETVNETHDRSZ)")]
    HeaderSize(#[source] io::Error),
    #[error("cannot clear its offloads (TUNSETOFFLOAD)")]
    Offload(#[source] io::Error),
}

/// struct ifreq as the tun ioctls use it: the name, then the flags in the union.
#[repr(C)]
pub(super) struct IfReq {
    pub name: [u8; libc::IFNAMSIZ],
    pub flags: i16,
    _pad: [u8; 22],
}

impl IfReq {
    pub fn new(flags: i16) -> Self {
        Self {
            name: [0; libc::IFNAMSIZ],
            flags,
            _pad: [0; 22],
        }
    }
}

/// An inherited tap descriptor, owned from [`Tap::from_inherited_fd`] on.
#[derive(Debug)]
pub struct Tap {
    file: File,
}

impl Tap {
    /// Takes ownership of `fd` once it is known to be an open tap with the right flags; a
    /// descriptor that is not is left alone (not closed). Then makes it non-blocking, sets the
    /// header size to 12 bytes and clears the offloads until a driver negotiates them.
    pub fn from_inherited_fd(fd: RawFd) -> Result<Self, TapError> {
        // SAFETY: F_GETFD takes no pointer; it fails with EBADF on a closed descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(TapError::NotOpen(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is open (checked above) and only borrowed for the TUNGETIFF check.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let mut ifreq = IfReq::new(0);
        // SAFETY: TUNGETIFF writes one struct ifreq, which `ifreq` is (40 bytes).
        let ret = unsafe {
            libc::ioctl(
                borrowed.as_raw_fd(),
                libc::TUNGETIFF as _,
                &mut ifreq as *mut IfReq,
            )
        };
        if ret < 0 {
            return Err(TapError::NotATap(io::Error::last_os_error()));
        }
        if ifreq.flags & REQUIRED_FLAGS != REQUIRED_FLAGS {
            return Err(TapError::WrongFlags(ifreq.flags));
        }
        // SAFETY: an open tun/tap descriptor that the configuration gives to this device alone
        // (config validation refuses a descriptor named twice); we own it from here on.
        let file = unsafe { File::from_raw_fd(fd) };
        let mut tap = Self { file };
        tap.set_nonblocking().map_err(TapError::NonBlocking)?;
        let size = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer.
        let ret = unsafe {
            libc::ioctl(
                tap.file.as_raw_fd(),
                libc::TUNSETVNETHDRSZ as _,
                &size as *const libc::c_int,
            )
        };
        if ret < 0 {
            return Err(TapError::HeaderSize(io::Error::last_os_error()));
        }
        tap.set_offload(0).map_err(TapError::Offload)?;
        Ok(tap)
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        // SAFETY: F_GETFL/F_SETFL on a descriptor we own; no pointers.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl TapIo for Tap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.file.write(frame)
    }

    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD as _,
                libc::c_ulong::from(flags),
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
