//! How the host reaches the agent: a Unix socket (`namespaces` back-end) or the VMM's vsock
//! Unix socket with Firecracker's `CONNECT <port>` handshake (`vm` back-end). Addresses are the
//! protocol crate's [`Address`]; this module adds a connection attempt whose every step is
//! bounded, for polling an agent that may never come up.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

pub use rust_vm_protocol::Address;

/// The vsock port the agent listens on in the guest.
pub const AGENT_VSOCK_PORT: u32 = rust_vm_protocol::DEFAULT_VSOCK_PORT;
/// The guest's vsock context id (3 is the first id available to guests).
pub const GUEST_CID: u32 = 3;

/// Opens one connection to `address` and completes the vsock handshake, each step bounded by
/// `timeout`. Returns a stream in blocking mode with no timeouts set.
pub fn dial(address: &Address, timeout: Duration) -> io::Result<UnixStream> {
    let path = match address {
        Address::Unix(path) => path,
        Address::VsockUds { path, .. } => path,
    };
    let mut stream = UnixStream::connect(path)?;
    if let Address::VsockUds { port, .. } = address {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.write_all(format!("CONNECT {port}\n").as_bytes())?;
        // One byte at a time: anything after the newline is agent traffic.
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while reply.len() < 64 {
            match stream.read(&mut byte) {
                Ok(0) => break,
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) => reply.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no answer to `CONNECT {port}` within {timeout:?} (nothing listens on guest port {port})"
                        ),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
        let text = String::from_utf8_lossy(&reply);
        if !text.starts_with("OK ") {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                if text.is_empty() {
                    format!("the VMM closed the vsock connection to guest port {port}")
                } else {
                    format!(
                        "vsock handshake for guest port {port} answered {:?}",
                        text.trim()
                    )
                },
            ));
        }
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(None)?;
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    #[test]
    fn vsock_handshake_accepts_ok_and_keeps_following_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 13];
            s.read_exact(&mut buf).expect("read");
            assert_eq!(&buf, b"CONNECT 1024\n");
            s.write_all(b"OK 1073741824\nhi").expect("write");
        });
        let addr = Address::VsockUds { path, port: 1024 };
        let mut stream = dial(&addr, Duration::from_secs(5)).expect("dial");
        let mut rest = [0u8; 2];
        stream.read_exact(&mut rest).expect("read");
        assert_eq!(&rest, b"hi");
        server.join().expect("join");
    }

    #[test]
    fn vsock_handshake_refused_when_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 13];
            s.read_exact(&mut buf).expect("read");
            drop(s);
        });
        let addr = Address::VsockUds { path, port: 1024 };
        let err = dial(&addr, Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("closed"), "{err}");
        server.join().expect("join");
    }
}
