//! The agent <-> container-process channel: a SOCK_SEQPACKET pair, one message per step.
//! It replaces waitpid for learning how setup went (the agent's reaper owns waitpid).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
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
    /// container process -> agent: the master of the pty it opened in the container's devpts
    /// (carried as SCM_RIGHTS), its slave now the process's controlling terminal and stdio.
    Terminal,
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
            Message::Terminal => vec![b'T'],
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
            b'T' => Message::Terminal,
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

    /// `None` when the other side closed (exited or exec'd). A descriptor that came with the
    /// message is closed: use [`Channel::recv_with_fd`] where one is expected.
    pub fn recv(&self) -> io::Result<Option<Message>> {
        Ok(self.recv_with_fd()?.map(|(m, _)| m))
    }

    /// A message and the descriptor passed with it, if any (close-on-exec here).
    pub fn recv_with_fd(&self) -> io::Result<Option<(Message, Option<OwnedFd>)>> {
        recv_raw_with_fd(self.fd.as_raw_fd())
    }
}

pub fn send_raw(fd: RawFd, m: &Message) -> io::Result<()> {
    send_raw_with_fd(fd, m, None)
}

/// Sends `m`, with `passed` as SCM_RIGHTS when given.
pub fn send_raw_with_fd(fd: RawFd, m: &Message, passed: Option<RawFd>) -> io::Result<()> {
    let mut b = m.encode();
    let mut iov = libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: b.len(),
    };
    // u64 elements keep the buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(passed) = passed {
        // SAFETY: CMSG_SPACE/CMSG_LEN only compute sizes.
        let (space, len) = unsafe {
            (
                libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32),
                libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32),
            )
        };
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as usize;
        // SAFETY: the control buffer (64 bytes) has room for one cmsghdr with one fd.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = len as usize;
            ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), passed);
        }
    }
    loop {
        // SAFETY: `msg` points at live buffers of the lengths it states.
        let rc = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
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
    Ok(recv_raw_with_fd(fd)?.map(|(m, _)| m))
}

fn recv_raw_with_fd(fd: RawFd) -> io::Result<Option<(Message, Option<OwnedFd>)>> {
    let mut buf = [0u8; MAX_MESSAGE];
    let mut control = [0u64; 8];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: a zeroed msghdr is valid; the buffers outlive the recvmsg call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: `msg` describes writable buffers of the stated lengths.
        let rc = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // Every descriptor that arrived is owned (and so closed) from here on, whatever the
        // message turns out to be.
        let fds = received_fds(&msg);
        if rc == 0 {
            return Ok(None);
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "more descriptors than expected came with a message",
            ));
        }
        let mut fds = fds.into_iter();
        let passed = fds.next();
        if fds.next().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "more than one descriptor came with a message",
            ));
        }
        return Message::decode(&buf[..rc as usize]).map(|m| Some((m, passed)));
    }
}

fn received_fds(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    // SAFETY: walking the control messages recvmsg filled in, within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let bytes = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    let fd = ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    // The kernel installed it in this process for us alone.
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    fds
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

    #[test]
    fn a_descriptor_travels_with_its_message() {
        let (a, b) = Channel::pair().expect("pair");
        let file = std::fs::File::open("/proc/self/status").expect("open");
        send_raw_with_fd(a.raw(), &Message::Terminal, Some(file.as_raw_fd())).expect("send");
        drop(file);
        a.send(&Message::Ready).expect("send");
        let (m, fd) = b.recv_with_fd().expect("recv").expect("a message");
        assert_eq!(m, Message::Terminal);
        let fd = fd.expect("the descriptor");
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).expect("flags");
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "received close-on-exec");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut text).expect("read");
        assert!(text.starts_with("Name:"), "{text}");
        assert!(matches!(
            b.recv_with_fd().expect("recv"),
            Some((Message::Ready, None))
        ));
    }
}
