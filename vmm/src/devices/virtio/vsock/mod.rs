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

pub use crate::config::VsockDeviceConfig;
pub use device::Vsock;
pub use muxer::port_path;

use super::VirtioError;

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("vsock guest CID {0} is reserved; use a value from 3 to 4294967294")]
    InvalidCid(u64),
    #[error("vsock socket {path} is in use by another process", path = path.display())]
    SocketInUse { path: PathBuf },
    #[error("vsock socket path {path} exists and is not a socket", path = path.display())]
    NotASocket { path: PathBuf },
    #[error("cannot listen on vsock socket {path}", path = path.display())]
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
