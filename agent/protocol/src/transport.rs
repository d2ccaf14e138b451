//! Addresses and connections to an agent.
//!
//! * `unix:PATH`: a Unix stream socket the agent listens on (host mode).
//! * `vsock-uds:PATH:PORT`: the host side of the VMM's vsock device, a Unix socket on which a
//!   connection to guest port `PORT` is requested with `CONNECT <port>\n` and confirmed with
//!   `OK <host port>\n`; after that the socket is the guest connection.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

/// The default vsock port the agent listens on in the guest.
pub const DEFAULT_VSOCK_PORT: u32 = 1024;

/// How long the vsock-uds handshake may take before the connection is given up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest acceptable handshake reply line.
const HANDSHAKE_LINE_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    VsockUds { path: PathBuf, port: u32 },
}

#[derive(Debug, Error)]
pub enum TransportError {
    #[error(
        "invalid agent address `{address}`: {reason} (expected unix:PATH or vsock-uds:PATH:PORT)"
    )]
    InvalidAddress { address: String, reason: String },
    #[error("cannot connect to {address}")]
    Connect {
        address: Address,
        #[source]
        source: io::Error,
    },
    #[error("vsock handshake with {address} failed: {reason}")]
    Handshake { address: Address, reason: String },
}

impl FromStr for Address {
    type Err = TransportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| TransportError::InvalidAddress {
            address: s.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(invalid("empty socket path"));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("vsock-uds:") {
            let (path, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| invalid("missing `:PORT`"))?;
            if path.is_empty() {
                return Err(invalid("empty socket path"));
            }
            let port = port
                .parse::<u32>()
                .map_err(|e| invalid(&format!("port `{port}`: {e}")))?;
            return Ok(Address::VsockUds {
                path: PathBuf::from(path),
                port,
            });
        }
        Err(invalid("unknown scheme"))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::VsockUds { path, port } => write!(f, "vsock-uds:{}:{port}", path.display()),
        }
    }
}

impl Address {
    /// Opens a new connection to the agent.
    pub fn connect(&self) -> Result<UnixStream, TransportError> {
        self.connect_within(HANDSHAKE_TIMEOUT)
    }

    /// Opens a new connection, each step of the vsock handshake bounded by `timeout` (for
    /// polling an agent that may not be up yet). The stream comes back blocking, with no
    /// timeouts set.
    pub fn connect_within(&self, timeout: Duration) -> Result<UnixStream, TransportError> {
        let (path, port) = match self {
            Address::Unix(path) => (path, None),
            Address::VsockUds { path, port } => (path, Some(*port)),
        };
        let mut stream = UnixStream::connect(path).map_err(|source| TransportError::Connect {
            address: self.clone(),
            source,
        })?;
        if let Some(port) = port {
            self.handshake(&mut stream, port, timeout)?;
        }
        Ok(stream)
    }

    fn handshake(
        &self,
        stream: &mut UnixStream,
        port: u32,
        timeout: Duration,
    ) -> Result<(), TransportError> {
        let fail = |reason: String| TransportError::Handshake {
            address: self.clone(),
            reason,
        };
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| fail(format!("setting a timeout: {e}")))?;
        stream
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .map_err(|e| fail(format!("sending CONNECT: {e}")))?;
        // Byte by byte: anything after the newline already belongs to the guest connection.
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            match stream.read(&mut byte) {
                Ok(0) => {
                    return Err(fail(format!(
                        "connection closed before a reply (is anything listening on guest port {port}?)"
                    )))
                }
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) => {
                    line.push(byte[0]);
                    if line.len() > HANDSHAKE_LINE_MAX {
                        return Err(fail("reply line too long".into()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(fail(format!(
                        "no reply within {timeout:?} (nothing listens on guest port {port} yet?)"
                    )))
                }
                Err(e) => return Err(fail(format!("reading the reply: {e}"))),
            }
        }
        let line = String::from_utf8_lossy(&line);
        if !line.starts_with("OK ") {
            return Err(fail(format!("expected `OK <port>`, got `{line}`")));
        }
        stream
            .set_read_timeout(None)
            .and_then(|()| stream.set_write_timeout(None))
            .map_err(|e| fail(format!("clearing the timeout: {e}")))?;
        Ok(())
    }
}

/// Opens a new connection to the agent at `addr` (`unix:PATH` or `vsock-uds:PATH:PORT`).
pub fn connect(addr: &str) -> Result<UnixStream, TransportError> {
    addr.parse::<Address>()?.connect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::thread;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            "unix:/run/agent.sock".parse::<Address>().unwrap(),
            Address::Unix("/run/agent.sock".into())
        );
        assert_eq!(
            "vsock-uds:/tmp/v.sock:1024".parse::<Address>().unwrap(),
            Address::VsockUds {
                path: "/tmp/v.sock".into(),
                port: 1024
            }
        );
        for bad in [
            "",
            "tcp:1.2.3.4:5",
            "unix:",
            "vsock-uds:/x",
            "vsock-uds:/x:port",
            "vsock-uds::5",
        ] {
            let err = bad.parse::<Address>().unwrap_err();
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["unix:/a/b", "vsock-uds:/a:7"] {
            assert_eq!(s.parse::<Address>().unwrap().to_string(), s);
        }
    }

    fn vsock_uds_server(reply: &'static [u8]) -> (tempdir::Dir, thread::JoinHandle<Vec<u8>>) {
        let dir = tempdir::Dir::new();
        let listener = UnixListener::bind(dir.path().join("v.sock")).unwrap();
        let handle = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while conn.read(&mut byte).unwrap() == 1 {
                request.push(byte[0]);
                if byte[0] == b'\n' {
                    break;
                }
            }
            if reply.is_empty() {
                // Refuse like the VMM does when no guest listener exists: hang up.
                return request;
            }
            conn.write_all(reply).unwrap();
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest);
            request.extend(rest);
            request
        });
        (dir, handle)
    }

    #[test]
    fn vsock_uds_handshake_then_raw_stream() {
        let (dir, server) = vsock_uds_server(b"OK 1073741824\n");
        let addr = format!("vsock-uds:{}:1024", dir.path().join("v.sock").display());
        let mut stream = connect(&addr).unwrap();
        stream.write_all(b"payload").unwrap();
        drop(stream);
        assert_eq!(server.join().unwrap(), b"CONNECT 1024\npayload");
    }

    #[test]
    fn vsock_uds_refusal_is_reported() {
        let (dir, _server) = vsock_uds_server(b"");
        let addr = format!("vsock-uds:{}:99", dir.path().join("v.sock").display());
        let err = connect(&addr).unwrap_err();
        assert!(err.to_string().contains("guest port 99"), "{err}");
    }

    /// A minimal self-cleaning temporary directory (the crate has no dev-dependencies).
    pub(crate) mod tempdir {
        use std::path::{Path, PathBuf};
        use std::sync::atomic::{AtomicU32, Ordering};

        pub struct Dir(PathBuf);

        impl Dir {
            pub fn new() -> Dir {
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "rust-vm-protocol-test-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }

            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
