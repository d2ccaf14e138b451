//! The socket, requests and replies.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// A failed request: what it was for, and the kernel's (or the socket's) error.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct NetlinkError {
    pub what: String,
    #[source]
    pub source: io::Error,
}

impl NetlinkError {
    pub fn new(what: impl Into<String>, source: io::Error) -> Self {
        NetlinkError {
            what: what.into(),
            source,
        }
    }

    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// One `NETLINK_ROUTE` socket in the calling thread's network namespace.
pub struct Handle {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// Replies are read into a buffer this large: a dump's datagrams are at most a page or two each.
const RECV_BUF: usize = 64 * 1024;

impl Handle {
    pub fn new() -> io::Result<Handle> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Handle {
            socket,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Sends a request that changes something and waits for the kernel's acknowledgement.
    /// `flags` adds to `NLM_F_REQUEST | NLM_F_ACK` (e.g. `NLM_F_CREATE | NLM_F_EXCL`).
    pub fn execute(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.exchange(message, NLM_F_REQUEST | NLM_F_ACK | flags)
            .map(drop)
    }

    /// Sends a dump request and returns every message of the reply.
    pub fn dump(&mut self, message: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.exchange(message, NLM_F_REQUEST | NLM_F_DUMP)
    }

    fn exchange(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        loop {
            let len = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut offset = 0;
            while offset < len {
                let reply =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..len])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let size = reply.header.length as usize;
                if size == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "netlink reply of length 0",
                    ));
                }
                offset += size;
                if reply.header.sequence_number != seq {
                    continue; // a late reply to an earlier request
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Error(err) => {
                        return match err.code {
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                            None if dump => continue,
                            None => Ok(replies),
                        }
                    }
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    _ => {}
                }
            }
        }
    }
}
