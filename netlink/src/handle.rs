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
}

fn undecodable(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("undecodable netlink reply: {e}"),
    )
}

impl Handle {
    pub fn new() -> io::Result<Handle> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Handle { socket, seq: 0 })
    }

    /// Sends a request that changes something and waits for the kernel's acknowledgement.
    /// `flags` adds to `NLM_F_REQUEST | NLM_F_ACK` (e.g. `NLM_F_CREATE | NLM_F_EXCL`).
    pub fn execute(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.request(message, NLM_F_ACK | flags).map(drop)
    }

    /// Sends a dump request and returns every message of the reply.
    pub fn dump(&mut self, message: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.request(message, NLM_F_DUMP)
    }

    /// Sends one request (`NLM_F_REQUEST | flags`) and collects the messages answering it until
    /// its acknowledgement or the end of a dump; a negative acknowledgement is the errno it
    /// carries.
    pub fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;

        let mut replies = Vec::new();
        loop {
            let (datagram, _) = self.socket.recv_from_full()?;
            let mut rest = &datagram[..];
            while !rest.is_empty() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(undecodable)?;
                // NLMSG_ALIGN: messages in a datagram start on 4-byte boundaries.
                let len = (reply.header.length as usize).next_multiple_of(4);
                if len == 0 {
                    return Err(undecodable("a message of length 0"));
                }
                rest = rest.get(len..).unwrap_or_default();
                if reply.header.sequence_number != self.seq {
                    continue; // a late reply to an earlier request
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(replies),
                    _ => {}
                }
            }
        }
    }
}
