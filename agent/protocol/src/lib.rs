//! The agent wire protocol: the one definition both the agent and the shim use.
//!
//! * [`frame`]: `u32` big-endian length + JSON body, bounded by [`MAX_FRAME_SIZE`].
//! * [`message`]: versioned requests with ids, and responses that are a result or an error
//!   with an [`ErrorCode`] and a message.
//! * [`transport`]: `unix:PATH` and `vsock-uds:PATH:PORT` addresses.
//! * [`client`]: a blocking [`Client`], including stdio stream attachment.
//!
//! The full description is in `docs/protocol.md`.

pub mod client;
mod error_chain;
pub mod frame;
pub mod message;
pub mod transport;

pub use client::{attach, attach_within, port_forward_within, Client, ClientError};
pub use error_chain::{error_chain, Chain};
pub use frame::{read_frame, write_frame, FrameError, MAX_FRAME_SIZE};
pub use message::*;
pub use transport::{connect, Address, TransportError, DEFAULT_VSOCK_PORT};

/// The virtio-fs tag of a pod's share: the host's per-sandbox export (docs/virtio-fs.md).
pub const SHARE_TAG: &str = "rust-vm-share";
/// Where the agent mounts the pod's share in the guest. Container `<id>` finds its root file
/// system at `<dir>/<id>/rootfs` and its bind-mount sources under `<dir>/<id>/mounts/`.
pub const GUEST_SHARE_DIR: &str = "/run/rust-vm/share";
