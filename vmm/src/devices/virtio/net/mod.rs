//! virtio-net over a tap the VMM inherits as an open descriptor: one RX and one TX queue, the
//! guest's 12-byte virtio-net header passed through to the tap unchanged, and the tap's receive
//! offloads set to what the driver negotiated.

mod device;
mod tap;

pub use crate::config::{MacAddr, NetDeviceConfig};
pub use device::{Net, NetStats};
pub use tap::{Tap, TapError, TapIo};

use super::VirtioError;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("net[{index}].tap_fd {fd}")]
    Tap {
        index: usize,
        fd: i32,
        #[source]
        source: TapError,
    },
    #[error(transparent)]
    Virtio(#[from] VirtioError),
}

#[cfg(test)]
mod tests;
