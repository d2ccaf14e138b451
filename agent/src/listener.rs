//! Where the agent listens: `vsock:PORT` in the guest, `unix:PATH` in host mode.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::str::FromStr;

use nix::sys::socket::{
    accept4, bind, getpeername, listen, recv, send, setsockopt, shutdown, socket, sockopt,
    AddressFamily, Backlog, MsgFlags, Shutdown, SockFlag, SockType, VsockAddr,
};

/// `VMADDR_CID_ANY`: accept connections addressed to any of our CIDs.
const VMADDR_CID_ANY: u32 = u32::MAX;
/// `VMADDR_CID_HOST`: the host, where the shim is: the only peer the agent serves over vsock.
const VMADDR_CID_HOST: u32 = 2;

/// Whether a vsock peer may talk to the agent: only the host may (not another guest, not a
/// process of this guest through a local transport).
fn vsock_peer_allowed(cid: u32) -> bool {
    cid == VMADDR_CID_HOST
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    Unix(PathBuf),
    Vsock { port: u32 },
}

impl FromStr for ListenAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("listen address `{s}`: empty socket path"));
            }
            return Ok(ListenAddress::Unix(PathBuf::from(path)));
        }
        if let Some(port) = s.strip_prefix("vsock:") {
            let port = port
                .parse()
                .map_err(|e| format!("listen address `{s}`: port `{port}`: {e}"))?;
            return Ok(ListenAddress::Vsock { port });
        }
        Err(format!(
            "listen address `{s}`: expected unix:PATH or vsock:PORT"
        ))
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            ListenAddress::Vsock { port } => write!(f, "vsock:{port}"),
        }
    }
}

pub struct Listener {
    fd: OwnedFd,
    /// Accepted connections are checked against [`vsock_peer_allowed`].
    vsock: bool,
}

impl Listener {
    pub fn bind(address: &ListenAddress) -> io::Result<Listener> {
        match address {
            ListenAddress::Unix(path) => {
                // A socket file left by an earlier run would make bind fail; anything else
                // at that path is not ours to remove.
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if meta.file_type().is_socket() {
                        std::fs::remove_file(path)?;
                    }
                }
                let listener = UnixListener::bind(path)?;
                Ok(Listener {
                    fd: OwnedFd::from(listener),
                    vsock: false,
                })
            }
            ListenAddress::Vsock { port } => {
                let fd = socket(
                    AddressFamily::Vsock,
                    SockType::Stream,
                    SockFlag::SOCK_CLOEXEC,
                    None,
                )?;
                bind(fd.as_raw_fd(), &VsockAddr::new(VMADDR_CID_ANY, *port))?;
                listen(&fd, Backlog::new(128).map_err(io::Error::from)?)?;
                Ok(Listener { fd, vsock: true })
            }
        }
    }

    pub fn accept(&self) -> io::Result<Conn> {
        loop {
            match accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                Ok(fd) => {
                    // SAFETY: accept4 returned a new descriptor that nothing else owns.
                    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                    if self.vsock {
                        let peer = getpeername::<VsockAddr>(fd.as_raw_fd())?;
                        if !vsock_peer_allowed(peer.cid()) {
                            log::warn!(
                                "refused a vsock connection from CID {} port {}: only the host \
                                 (CID {VMADDR_CID_HOST}) may reach the agent",
                                peer.cid(),
                                peer.port()
                            );
                            continue; // dropping `fd` closes it
                        }
                    }
                    return Ok(Conn { fd });
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// One accepted connection (a Unix or vsock stream socket).
pub struct Conn {
    fd: OwnedFd,
}

impl Conn {
    pub fn try_clone(&self) -> io::Result<Conn> {
        Ok(Conn {
            fd: self.fd.as_fd().try_clone_to_owned()?,
        })
    }

    /// A probe for [`peer_gone`] on this connection, for use while it is borrowed elsewhere.
    pub fn hangup_probe(&self) -> impl Fn() -> bool + '_ {
        let fd = self.fd.as_fd();
        move || peer_gone(fd)
    }

    pub fn shutdown_write(&self) {
        let _ = shutdown(self.fd.as_raw_fd(), Shutdown::Write);
    }

    pub fn shutdown_both(&self) {
        let _ = shutdown(self.fd.as_raw_fd(), Shutdown::Both);
    }

    /// Ends a connection whose framing is lost after a last message was written: closing with
    /// unread input would reset the connection and could discard that message on the peer's
    /// side, so discard what the peer still sends (bounded in bytes and time) before closing.
    pub fn close_after_reply(mut self, budget: usize, timeout: std::time::Duration) {
        self.shutdown_write();
        let timeout =
            nix::sys::time::TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _);
        if setsockopt(&self.fd, sockopt::ReceiveTimeout, &timeout).is_err() {
            return;
        }
        let mut left = budget;
        let mut sink = [0u8; 16 * 1024];
        while left > 0 {
            match self.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    }
}

/// The peer closed the connection (both directions: POLLHUP). A peer that only shut down its
/// writing side is still there to read.
fn peer_gone(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: 0,
        revents: 0,
    }];
    // SAFETY: `fds` is one valid pollfd; a zero timeout does not block.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    rc > 0 && fds[0].revents & (libc::POLLHUP | libc::POLLERR) != 0
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match recv(self.fd.as_raw_fd(), buf, MsgFlags::empty()) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => return other.map_err(io::Error::from),
            }
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // MSG_NOSIGNAL: a vanished client must be an error, never a SIGPIPE.
            match send(self.fd.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => return other.map_err(io::Error::from),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_host_may_connect_over_vsock() {
        assert!(vsock_peer_allowed(VMADDR_CID_HOST));
        for cid in [0, 1, 3, 4, 1000, VMADDR_CID_ANY] {
            assert!(!vsock_peer_allowed(cid), "CID {cid}");
        }
    }

    /// The guest's listener, as far as this host allows: AF_VSOCK binds and listens, but has no
    /// loopback here, so nothing can connect.
    #[test]
    #[ignore = "needs AF_VSOCK (the vsock kernel module)"]
    fn vsock_listener_binds() {
        let listener = Listener::bind(&ListenAddress::Vsock { port: 51_999 }).unwrap();
        let addr: VsockAddr =
            nix::sys::socket::getsockname(listener.fd.as_raw_fd()).expect("getsockname");
        assert_eq!((addr.cid(), addr.port()), (VMADDR_CID_ANY, 51_999));
        // A second listener on the same port is refused: the first one really holds it.
        assert!(Listener::bind(&ListenAddress::Vsock { port: 51_999 }).is_err());
    }

    #[test]
    fn unix_listener_replaces_a_stale_socket_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        drop(Listener::bind(&ListenAddress::Unix(path.clone())).unwrap());
        // The socket file of the dropped listener is stale: binding again replaces it.
        let listener = Listener::bind(&ListenAddress::Unix(path.clone())).unwrap();
        let client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let mut conn = listener.accept().unwrap();
        (&client).write_all(b"x").unwrap();
        let mut byte = [0u8];
        conn.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x");
        // A regular file at the path is not ours to delete.
        let file = dir.path().join("file");
        std::fs::write(&file, "keep").unwrap();
        assert!(Listener::bind(&ListenAddress::Unix(file.clone())).is_err());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
    }

    #[test]
    fn parses_listen_addresses() {
        assert_eq!(
            "unix:/run/a.sock".parse::<ListenAddress>(),
            Ok(ListenAddress::Unix("/run/a.sock".into()))
        );
        assert_eq!(
            "vsock:1024".parse::<ListenAddress>(),
            Ok(ListenAddress::Vsock { port: 1024 })
        );
        for bad in ["unix:", "vsock:x", "tcp:1", ""] {
            let err = bad.parse::<ListenAddress>().unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }
}
