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

pub use client::{attach, Client, ClientError};
pub use error_chain::{error_chain, Chain};
pub use frame::{read_frame, write_frame, FrameError, MAX_FRAME_SIZE};
pub use message::*;
pub use transport::{connect, Address, TransportError, DEFAULT_VSOCK_PORT};
