//! virtio-vsock whose host side is a Unix socket, following the convention Firecracker documents:
//! a host client connects to `uds_path` and sends `CONNECT <port>\n` to reach a guest listener
//! (answer: `OK <host port>\n`), and a guest connection to host port P reaches the Unix socket
//! at `<uds_path>_<P>`.

mod connection;
mod device;
mod muxer;
mod packet;

use std::io;
use std::path::PathBuf;

pub use device::Vsock;
pub use muxer::port_path;

use super::VirtioError;

/// The vsock device as the user configures it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// The guest's context ID; 0-2 and u32::MAX are reserved.
    pub guest_cid: u32,
    /// Host Unix socket for host-initiated connections; also the prefix of `<uds_path>_<port>`.
    pub uds_path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("vsock guest CID {0} is reserved; use a value from 3 to 4294967294")]
    InvalidCid(u32),
    #[error("vsock socket {path} is in use by another process", path = path.display())]
    SocketInUse { path: PathBuf },
    #[error("vsock socket path {path} exists and is not a socket", path = path.display())]
    NotASocket { path: PathBuf },
    #[error("cannot listen on vsock socket {path}: {source}", path = path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Virtio(#[from] VirtioError),
}

#[cfg(test)]
mod tests;
