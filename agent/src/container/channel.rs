//! The agent <-> container-process channel: a SOCK_SEQPACKET pair, one message per step.
//! It replaces waitpid for learning how setup went (the agent's reaper owns waitpid).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// agent -> child: you are in the cgroup, go on.
    Go,
    /// child -> agent: I unshared the user namespace, write my id maps.
    NeedIdMaps,
    /// agent -> child: id maps written.
    IdMapsDone,
    /// intermediate -> agent: the pid (in the agent's namespace) of the process it cloned.
    Pid(i32),
    /// init -> agent: set up, waiting for start.
    Ready,
    /// agent -> init: exec now.
    Start,
    /// child -> agent: a step failed.
    Error(String),
}

const MAX_MESSAGE: usize = 4096;

impl Message {
    fn encode(&self) -> Vec<u8> {
        match self {
            Message::Go => vec![b'G'],
            Message::NeedIdMaps => vec![b'U'],
            Message::IdMapsDone => vec![b'M'],
            Message::Pid(p) => {
                let mut v = vec![b'P'];
                v.extend_from_slice(&p.to_le_bytes());
                v
            }
            Message::Ready => vec![b'R'],
            Message::Start => vec![b'S'],
            Message::Error(m) => {
                let mut v = vec![b'E'];
                let bytes = m.as_bytes();
                v.extend_from_slice(&bytes[..bytes.len().min(MAX_MESSAGE - 1)]);
                v
            }
        }
    }

    fn decode(b: &[u8]) -> io::Result<Message> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("bad message {b:?}"));
        Ok(match b.first().ok_or_else(bad)? {
            b'G' => Message::Go,
            b'U' => Message::NeedIdMaps,
            b'M' => Message::IdMapsDone,
            b'P' => {
                let raw: [u8; 4] = b.get(1..5).ok_or_else(bad)?.try_into().map_err(|_| bad())?;
                Message::Pid(i32::from_le_bytes(raw))
            }
            b'R' => Message::Ready,
            b'S' => Message::Start,
            b'E' => Message::Error(String::from_utf8_lossy(&b[1..]).into_owned()),
            _ => return Err(bad()),
        })
    }
}

/// One end of the pair.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// (agent end, child end), both close-on-exec.
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors socketpair writes.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: socketpair succeeded, so both fds are open and owned by nobody else.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Bounds every receive on this end (the agent's) so a wedged child cannot hang it.
    pub fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: `tv` is a valid timeval for the size passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn send(&self, m: &Message) -> io::Result<()> {
        send_raw(self.fd.as_raw_fd(), m)
    }

    /// `None` when the other side closed (exited or exec'd).
    pub fn recv(&self) -> io::Result<Option<Message>> {
        recv_raw(self.fd.as_raw_fd())
    }
}

pub fn send_raw(fd: RawFd, m: &Message) -> io::Result<()> {
    let b = m.encode();
    loop {
        // SAFETY: `b` is valid for its length.
        let rc = unsafe { libc::send(fd, b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL) };
        if rc >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

pub fn recv_raw(fd: RawFd) -> io::Result<Option<Message>> {
    let mut buf = [0u8; MAX_MESSAGE];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let rc = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if rc > 0 {
            return Message::decode(&buf[..rc as usize]).map(Some);
        }
        if rc == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_eof_is_none() {
        let (a, b) = Channel::pair().expect("pair");
        for m in [
            Message::Go,
            Message::Pid(4242),
            Message::Error("mounting proc: EPERM".into()),
            Message::Ready,
        ] {
            a.send(&m).expect("send");
            assert_eq!(b.recv().expect("recv"), Some(m));
        }
        drop(a);
        assert_eq!(b.recv().expect("recv"), None);
    }
}
