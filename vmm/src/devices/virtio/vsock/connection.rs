//! One vsock stream between a guest port and a host Unix socket: its state, its credit-based flow
//! control in both directions, and the bytes waiting for the host socket to accept them.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;

use vmm_sys_util::epoll::EventSet;

/// Receive buffer we advertise to the guest for each connection (buf_alloc).
pub const CONN_BUF_SIZE: u32 = 256 * 1024;

/// The two ports of a connection. The host side has no CID of its own beyond HOST_CID.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct ConnKey {
    pub host_port: u32,
    pub guest_port: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Host-initiated: REQUEST sent (or queued) to the guest, waiting for RESPONSE or RST.
    Connecting,
    Established,
}

/// Credit accounting (virtio spec 5.10.6.3). All counters wrap, as on the wire.
#[derive(Clone, Copy, Debug)]
pub struct Credit {
    /// Bytes of guest data we have written to the host socket (our fwd_cnt).
    pub fwd_cnt: Wrapping<u32>,
    /// fwd_cnt as last told to the guest.
    fwd_cnt_told: Wrapping<u32>,
    /// Bytes the guest has sent us.
    rx_cnt: Wrapping<u32>,
    /// The guest's receive buffer and how much of what we sent it has consumed.
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// Bytes we have sent the guest.
    tx_cnt: Wrapping<u32>,
}

impl Credit {
    pub fn new(peer_buf_alloc: u32, peer_fwd_cnt: u32) -> Self {
        Self {
            fwd_cnt: Wrapping(0),
            fwd_cnt_told: Wrapping(0),
            rx_cnt: Wrapping(0),
            peer_buf_alloc,
            peer_fwd_cnt: Wrapping(peer_fwd_cnt),
            tx_cnt: Wrapping(0),
        }
    }

    /// Bytes we may still send the guest.
    pub fn peer_free(&self) -> u32 {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Bytes the guest may still send us.
    pub fn our_free(&self) -> u32 {
        CONN_BUF_SIZE.saturating_sub((self.rx_cnt - self.fwd_cnt).0)
    }

    pub fn update_peer(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = Wrapping(fwd_cnt);
    }

    /// True when the guest believes less than half our buffer is free but more has drained:
    /// without an update it could stall waiting for credit it already has.
    pub fn update_due(&self) -> bool {
        let guest_view_free = CONN_BUF_SIZE.saturating_sub((self.rx_cnt - self.fwd_cnt_told).0);
        self.fwd_cnt != self.fwd_cnt_told && guest_view_free < CONN_BUF_SIZE / 2
    }

    /// The (buf_alloc, fwd_cnt) pair for an outgoing header; records that the guest was told.
    pub fn advertise(&mut self) -> (u32, u32) {
        self.fwd_cnt_told = self.fwd_cnt;
        (CONN_BUF_SIZE, self.fwd_cnt.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("the guest sent {len} bytes with only {free} bytes of credit")]
    CreditExceeded { len: usize, free: u32 },
    #[error("the host socket failed")]
    Io(#[from] io::Error),
    #[error("the host socket accepted no bytes")]
    WriteZero,
}

/// What one read from the host socket gave for the guest.
#[derive(Debug)]
pub enum HostRead {
    Data(usize),
    /// The host closed its sending side.
    Eof,
    /// Nothing to read right now.
    Empty,
}

pub struct Connection {
    pub stream: UnixStream,
    pub key: ConnKey,
    pub state: ConnState,
    pub credit: Credit,
    /// Guest bytes the host socket has not taken yet; bounded by our advertised buffer.
    to_host: VecDeque<u8>,
    /// The host socket reported readable and has not yet been read dry.
    pub readable: bool,
    pub host_eof: bool,
    /// The guest will send no more (SHUTDOWN SEND): shut the host socket's write side once drained.
    pub guest_done_sending: bool,
    /// The guest will receive no more (SHUTDOWN RCV): stop reading the host socket.
    pub guest_done_receiving: bool,
    /// A CREDIT_REQUEST went out and no credit arrived since.
    pub credit_requested: bool,
    /// Epoll interest currently registered for the stream, if any.
    pub registered: Option<EventSet>,
    /// Forgotten by the muxer; dropped once out of the event loop.
    pub closed: bool,
}

impl Connection {
    pub fn new(stream: UnixStream, key: ConnKey, state: ConnState, credit: Credit) -> Self {
        Self {
            stream,
            key,
            state,
            credit,
            to_host: VecDeque::new(),
            readable: false,
            host_eof: false,
            guest_done_sending: false,
            guest_done_receiving: false,
            credit_requested: false,
            registered: None,
            closed: false,
        }
    }

    /// The epoll interest this connection needs now. Empty means: leave the event loop alone.
    pub fn wanted_events(&self) -> EventSet {
        let mut events = EventSet::empty();
        if self.state != ConnState::Established {
            return events;
        }
        if !self.readable
            && !self.host_eof
            && !self.guest_done_receiving
            && self.credit.peer_free() > 0
        {
            events |= EventSet::IN;
        }
        if !self.to_host.is_empty() {
            events |= EventSet::OUT;
        }
        events
    }

    pub fn pending_to_host(&self) -> usize {
        self.to_host.len()
    }

    /// Takes guest data for the host socket: written now as far as it goes, the rest queued.
    pub fn send_to_host(&mut self, data: &[u8]) -> Result<(), ConnError> {
        let free = self.credit.our_free();
        if data.len() > free as usize {
            return Err(ConnError::CreditExceeded {
                len: data.len(),
                free,
            });
        }
        self.credit.rx_cnt += Wrapping(data.len() as u32);
        self.to_host.extend(data);
        self.flush_to_host()
    }

    /// Writes queued guest data to the host socket until it would block.
    pub fn flush_to_host(&mut self) -> Result<(), ConnError> {
        while !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            match self.stream.write(front) {
                Ok(0) => return Err(ConnError::WriteZero),
                Ok(n) => {
                    self.to_host.drain(..n);
                    self.credit.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if self.to_host.is_empty() && self.guest_done_sending {
            // Half-close so the host client sees end-of-stream; it may already be gone.
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Ok(())
    }

    /// Reads host data for the guest, at most what the guest has credit for.
    pub fn read_from_host(&mut self, buf: &mut [u8]) -> Result<HostRead, ConnError> {
        let max = buf.len().min(self.credit.peer_free() as usize);
        if max == 0 {
            return Ok(HostRead::Empty);
        }
        loop {
            return match self.stream.read(&mut buf[..max]) {
                Ok(0) => Ok(HostRead::Eof),
                Ok(n) => {
                    self.credit.tx_cnt += Wrapping(n as u32);
                    Ok(HostRead::Data(n))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(HostRead::Empty),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e.into()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection() -> (Connection, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let key = ConnKey {
            host_port: 1,
            guest_port: 2,
        };
        let conn = Connection::new(ours, key, ConnState::Established, Credit::new(1000, 0));
        (conn, theirs)
    }

    #[test]
    fn peer_credit_limits_reads_and_wraps() {
        let (mut conn, mut host) = connection();
        host.write_all(&[7u8; 1500]).unwrap();
        let mut buf = [0u8; 4096];
        assert!(matches!(
            conn.read_from_host(&mut buf).unwrap(),
            HostRead::Data(1000)
        ));
        assert_eq!(conn.credit.peer_free(), 0);
        assert!(!conn.wanted_events().contains(EventSet::IN));
        assert!(matches!(
            conn.read_from_host(&mut buf).unwrap(),
            HostRead::Empty
        ));
        // The guest consumed 600 bytes.
        conn.credit.update_peer(1000, 600);
        assert_eq!(conn.credit.peer_free(), 600);
        assert!(matches!(
            conn.read_from_host(&mut buf).unwrap(),
            HostRead::Data(500)
        ));

        // Counters wrap around u32 without losing track.
        let mut credit = Credit::new(100, u32::MAX - 10);
        credit.tx_cnt = Wrapping(u32::MAX - 10) + Wrapping(50);
        assert_eq!(credit.peer_free(), 50);
    }

    #[test]
    fn guest_data_is_refused_beyond_our_credit() {
        let (mut conn, _host) = connection();
        let big = vec![0u8; CONN_BUF_SIZE as usize + 1];
        assert!(matches!(
            conn.send_to_host(&big),
            Err(ConnError::CreditExceeded { .. })
        ));
    }

    #[test]
    fn a_slow_host_queues_data_until_it_drains() {
        let (mut conn, mut host) = connection();
        let chunk = vec![1u8; 16 * 1024];
        let mut sent = 0u32;
        // Fill until the socket buffer is full and data queues up.
        while conn.pending_to_host() == 0 {
            conn.send_to_host(&chunk).unwrap();
            sent += chunk.len() as u32;
        }
        assert!(conn.wanted_events().contains(EventSet::OUT));
        let queued = conn.pending_to_host() as u32;
        assert_eq!(conn.credit.fwd_cnt.0, sent - queued);
        assert_eq!(conn.credit.our_free(), CONN_BUF_SIZE - queued);

        // The host reads everything; the queue drains into the socket and credit comes back.
        host.set_nonblocking(true).unwrap();
        let mut received = 0u32;
        let mut buf = vec![0u8; 64 * 1024];
        while received < sent {
            match host.read(&mut buf) {
                Ok(n) => received += n as u32,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.flush_to_host().unwrap(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(conn.pending_to_host(), 0);
        assert_eq!(conn.credit.fwd_cnt.0, sent);
        assert_eq!(conn.credit.our_free(), CONN_BUF_SIZE);
        assert!(!conn.wanted_events().contains(EventSet::OUT));
    }

    #[test]
    fn credit_update_is_due_once_the_guest_view_runs_low() {
        let mut credit = Credit::new(0, 0);
        credit.rx_cnt = Wrapping(CONN_BUF_SIZE / 2 + 1);
        assert!(!credit.update_due(), "nothing drained yet");
        credit.fwd_cnt = Wrapping(CONN_BUF_SIZE / 2 + 1);
        assert!(credit.update_due());
        assert_eq!(credit.advertise(), (CONN_BUF_SIZE, CONN_BUF_SIZE / 2 + 1));
        assert!(!credit.update_due());
    }
}
