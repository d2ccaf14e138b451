//! virtio-vsock packets: the 44-byte header (struct virtio_vsock_hdr) and moving packets between
//! descriptor chains and host buffers. The header and payload may be split across descriptors
//! in any way, so chains are read and written as byte streams.

use std::io::{self, Read, Write};
use std::ops::Deref;

use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::ByteValued;

use crate::GuestMemory;

pub const HOST_CID: u64 = 2;
pub const TYPE_STREAM: u16 = 1;

pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;

/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

pub const HEADER_SIZE: usize = std::mem::size_of::<PacketHeader>();
/// Largest payload of one packet, in either direction (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// struct virtio_vsock_hdr, little endian on the wire.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketHeader {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

// SAFETY: integers only and packed, so no padding; any bit pattern is valid.
unsafe impl ByteValued for PacketHeader {}

const _: () = assert!(HEADER_SIZE == 44);

impl PacketHeader {
    /// Converts between wire (little endian) and host order; the same operation both ways.
    fn swap_le(self) -> Self {
        Self {
            src_cid: u64::from_le(self.src_cid),
            dst_cid: u64::from_le(self.dst_cid),
            src_port: u32::from_le(self.src_port),
            dst_port: u32::from_le(self.dst_port),
            len: u32::from_le(self.len),
            type_: u16::from_le(self.type_),
            op: u16::from_le(self.op),
            flags: u32::from_le(self.flags),
            buf_alloc: u32::from_le(self.buf_alloc),
            fwd_cnt: u32::from_le(self.fwd_cnt),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("descriptor chain is malformed or outside guest memory: {0}")]
    Chain(virtio_queue::Error),
    #[error("buffer of {0} bytes cannot hold a packet header")]
    TooShort(usize),
    #[error("payload length {0} exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(u32),
    #[error("header announces {announced} payload bytes but the chain holds {available}")]
    Truncated { announced: u32, available: usize },
    #[error("guest memory access failed")]
    Io(#[from] io::Error),
}

/// Reads a packet the guest put on the TX queue: the header, and its payload into `payload`
/// (which must hold MAX_PAYLOAD bytes). Returns the header; the payload is `header.len` bytes.
pub fn read_tx_packet<M>(
    mem: &GuestMemory,
    chain: DescriptorChain<M>,
    payload: &mut [u8],
) -> Result<PacketHeader, PacketError>
where
    M: Deref,
    M::Target: vm_memory::GuestMemory + Sized,
{
    let mut reader: Reader<'_> = Reader::new(mem, chain).map_err(PacketError::Chain)?;
    let available = reader.available_bytes();
    if available < HEADER_SIZE {
        return Err(PacketError::TooShort(available));
    }
    let header = reader.read_obj::<PacketHeader>()?.swap_le();
    let len = header.len;
    if len as usize > MAX_PAYLOAD.min(payload.len()) {
        return Err(PacketError::TooLarge(len));
    }
    let available = reader.available_bytes();
    if available < len as usize {
        return Err(PacketError::Truncated {
            announced: len,
            available,
        });
    }
    reader.read_exact(&mut payload[..len as usize])?;
    Ok(header)
}

/// A guest RX buffer, ready to take one packet.
pub struct RxBuffer<'a> {
    writer: Writer<'a>,
}

impl<'a> RxBuffer<'a> {
    pub fn new<M>(mem: &'a GuestMemory, chain: DescriptorChain<M>) -> Result<Self, PacketError>
    where
        M: Deref,
        M::Target: vm_memory::GuestMemory + Sized,
    {
        let writer = Writer::new(mem, chain).map_err(PacketError::Chain)?;
        if writer.available_bytes() < HEADER_SIZE {
            return Err(PacketError::TooShort(writer.available_bytes()));
        }
        Ok(Self { writer })
    }

    /// Payload bytes this buffer can take after the header.
    pub fn payload_room(&self) -> usize {
        (self.writer.available_bytes() - HEADER_SIZE).min(MAX_PAYLOAD)
    }

    /// Writes the packet; returns the bytes written (the used length).
    pub fn write(mut self, header: &PacketHeader, payload: &[u8]) -> Result<u32, PacketError> {
        self.writer.write_obj(header.swap_le())?;
        self.writer.write_all(payload)?;
        Ok((HEADER_SIZE + payload.len()) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_wire_order() {
        let header = PacketHeader {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 1234,
            dst_port: 52,
            len: 10,
            type_: TYPE_STREAM,
            op: OP_RW,
            flags: 0,
            buf_alloc: 4096,
            fwd_cnt: 7,
        };
        let wire = header.swap_le();
        assert_eq!(&wire.as_slice()[..8], &3u64.to_le_bytes());
        assert_eq!(&wire.as_slice()[28..30], &TYPE_STREAM.to_le_bytes());
        assert_eq!(wire.swap_le(), header);
    }
}
