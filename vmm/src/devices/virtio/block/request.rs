//! Parsing and execution of one virtio-blk request: a device-readable header, data buffers whose
//! direction depends on the request type, and a final device-writable status byte.
//!
//! Everything here is guest-controlled. A chain whose status byte cannot be written is returned
//! unanswered (used length 0); any other defect is answered with an error status.

use std::io;
use std::ops::Deref;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryBackend};

use super::disk::{DiskImage, ID_BYTES, SECTOR_SIZE};
use crate::logger::guest_warn;
use crate::GuestMemory;

/// Bytes moved per host I/O call; bounds the bounce buffer whatever the guest asks for.
const CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct RequestHeader {
    request_type: u32,
    _ioprio: u32,
    sector: u64,
}

// SAFETY: plain old data made of integers, no padding.
unsafe impl ByteValued for RequestHeader {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestType {
    In,
    Out,
    Flush,
    GetId,
    Unsupported(u32),
}

impl From<u32> for RequestType {
    fn from(value: u32) -> Self {
        match value {
            VIRTIO_BLK_T_IN => Self::In,
            VIRTIO_BLK_T_OUT => Self::Out,
            VIRTIO_BLK_T_FLUSH => Self::Flush,
            VIRTIO_BLK_T_GET_ID => Self::GetId,
            other => Self::Unsupported(other),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the request header is missing, device-writable or shorter than 16 bytes")]
    BadHeader,
    #[error("descriptor {addr:#x}+{len:#x} lies outside guest memory")]
    OutsideMemory { addr: u64, len: u32 },
    #[error("a data buffer of a {0:?} request points the wrong way")]
    WrongDirection(RequestType),
    #[error("a {0:?} request carries no data buffer")]
    MissingData(RequestType),
    #[error("data length {0} is not a whole number of sectors")]
    UnalignedLength(u64),
    #[error("sector {sector} + {len} bytes lies past the end of the disk ({sectors} sectors)")]
    OutOfRange { sector: u64, len: u64, sectors: u64 },
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("request type {0} is not supported")]
    Unsupported(u32),
    #[error("guest memory access failed")]
    Memory(#[from] vm_memory::GuestMemoryError),
    #[error("host I/O on the disk image failed")]
    Io(#[from] io::Error),
}

impl RequestError {
    fn status(&self) -> u8 {
        match self {
            Self::Unsupported(_) => VIRTIO_BLK_S_UNSUPP as u8,
            _ => VIRTIO_BLK_S_IOERR as u8,
        }
    }
}

/// A request whose buffers have been checked against guest memory.
#[derive(Debug)]
struct Request {
    request_type: RequestType,
    sector: u64,
    data: Vec<Descriptor>,
}

impl Request {
    fn parse(mem: &GuestMemory, descs: &[Descriptor]) -> Result<Self, RequestError> {
        let (header_desc, data) = descs.split_first().ok_or(RequestError::BadHeader)?;
        if header_desc.is_write_only()
            || (header_desc.len() as usize) < std::mem::size_of::<RequestHeader>()
        {
            return Err(RequestError::BadHeader);
        }
        check_in_memory(mem, header_desc)?;
        let header: RequestHeader = mem.read_obj(header_desc.addr())?;
        let request_type = RequestType::from(u32::from_le(header.request_type));
        let device_writes = match request_type {
            RequestType::In | RequestType::GetId => true,
            RequestType::Out => false,
            // Buffers of these are never touched.
            RequestType::Flush | RequestType::Unsupported(_) => {
                return Ok(Self {
                    request_type,
                    sector: 0,
                    data: Vec::new(),
                })
            }
        };
        for desc in data {
            if desc.is_write_only() != device_writes {
                return Err(RequestError::WrongDirection(request_type));
            }
            check_in_memory(mem, desc)?;
        }
        if request_type == RequestType::GetId && data.is_empty() {
            return Err(RequestError::MissingData(request_type));
        }
        Ok(Self {
            request_type,
            sector: u64::from_le(header.sector),
            data: data.to_vec(),
        })
    }

    /// Runs the request; returns how many bytes were written into guest buffers.
    fn execute(&self, disk: &DiskImage, mem: &GuestMemory) -> Result<u32, RequestError> {
        match self.request_type {
            RequestType::In => {
                let offset = self.checked_offset(disk)?;
                self.transfer(offset, |desc_addr, buf, disk_offset| {
                    disk.read_at(buf, disk_offset)?;
                    mem.write_slice(buf, desc_addr)?;
                    Ok(())
                })
            }
            RequestType::Out => {
                if disk.read_only() {
                    return Err(RequestError::ReadOnly);
                }
                let offset = self.checked_offset(disk)?;
                self.transfer(offset, |desc_addr, buf, disk_offset| {
                    mem.read_slice(buf, desc_addr)?;
                    disk.write_at(buf, disk_offset)?;
                    Ok(())
                })?;
                Ok(0)
            }
            RequestType::Flush => {
                disk.flush()?;
                Ok(0)
            }
            RequestType::GetId => {
                // parse() guarantees a data buffer.
                let desc = &self.data[0];
                let len = (desc.len() as usize).min(ID_BYTES);
                mem.write_slice(&disk.id()[..len], desc.addr())?;
                Ok(len as u32)
            }
            RequestType::Unsupported(t) => Err(RequestError::Unsupported(t)),
        }
    }

    fn data_len(&self) -> u64 {
        self.data.iter().map(|d| u64::from(d.len())).sum()
    }

    /// Byte offset of the request on the disk, once the whole transfer is known to fit.
    fn checked_offset(&self, disk: &DiskImage) -> Result<u64, RequestError> {
        let len = self.data_len();
        if !len.is_multiple_of(SECTOR_SIZE) {
            return Err(RequestError::UnalignedLength(len));
        }
        let out_of_range = || RequestError::OutOfRange {
            sector: self.sector,
            len,
            sectors: disk.sectors(),
        };
        let offset = self
            .sector
            .checked_mul(SECTOR_SIZE)
            .ok_or_else(out_of_range)?;
        match offset.checked_add(len) {
            Some(end) if end <= disk.size() => Ok(offset),
            _ => Err(out_of_range()),
        }
    }

    /// Walks the data buffers in chunks of at most CHUNK bytes; returns the bytes covered.
    fn transfer<F>(&self, mut disk_offset: u64, mut step: F) -> Result<u32, RequestError>
    where
        F: FnMut(GuestAddress, &mut [u8], u64) -> Result<(), RequestError>,
    {
        let mut buf = vec![0u8; CHUNK.min(self.data_len() as usize)];
        let mut total = 0u32;
        for desc in &self.data {
            let mut done = 0u32;
            while done < desc.len() {
                let n = (desc.len() - done).min(CHUNK as u32);
                let addr = GuestAddress(desc.addr().0 + u64::from(done));
                step(addr, &mut buf[..n as usize], disk_offset)?;
                done += n;
                disk_offset += u64::from(n);
            }
            // Bounded by the chain length the queue already checked to fit in a u32.
            total = total.saturating_add(desc.len());
        }
        Ok(total)
    }
}

fn check_in_memory(mem: &GuestMemory, desc: &Descriptor) -> Result<(), RequestError> {
    if GuestMemoryBackend::check_range(mem, desc.addr(), desc.len() as usize) {
        Ok(())
    } else {
        Err(RequestError::OutsideMemory {
            addr: desc.addr().0,
            len: desc.len(),
        })
    }
}

/// Handles one request chain. Returns the used length: bytes the device wrote into the chain.
pub fn process<M>(disk: &DiskImage, mem: &GuestMemory, chain: DescriptorChain<M>) -> u32
where
    M: Deref,
    M::Target: vm_memory::GuestMemory,
{
    let head = chain.head_index();
    let mut descs: Vec<Descriptor> = chain.collect();
    let status = match descs.pop() {
        Some(d) if d.is_write_only() && d.len() >= 1 && check_in_memory(mem, &d).is_ok() => d,
        _ => {
            guest_warn!("virtio-blk: request {head} has no writable status byte, dropped");
            return 0;
        }
    };
    let (code, written) = match Request::parse(mem, &descs).and_then(|r| {
        let written = r.execute(disk, mem)?;
        Ok((VIRTIO_BLK_S_OK as u8, written))
    }) {
        Ok(done) => done,
        Err(e) => {
            let status = e.status();
            // `{:#}`: the error with its causes.
            guest_warn!(
                "virtio-blk {}: request {head}: {:#}",
                disk.path().display(),
                anyhow::Error::from(e)
            );
            (status, 0)
        }
    };
    if let Err(e) = mem.write_obj(code, status.addr()) {
        log::error!("virtio-blk: cannot write the status of request {head}: {e}");
        return written;
    }
    written.saturating_add(1)
}
