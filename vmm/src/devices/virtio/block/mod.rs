//! virtio-blk backed by a host file (or block device): read, write, flush and get-id on one
//! request queue, with an optional read-only mode.

mod device;
mod disk;
mod request;

use std::io;
use std::path::PathBuf;

pub use device::Block;
pub use disk::DiskImage;

use super::VirtioError;

/// One block device as the user configures it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BlockConfig {
    /// Backing file or host block device.
    pub path: PathBuf,
    /// Offer the disk read-only (VIRTIO_BLK_F_RO); writes fail with an I/O error status.
    #[serde(default)]
    pub read_only: bool,
    /// Serial returned to VIRTIO_BLK_T_GET_ID (at most 20 bytes); derived from the file if unset.
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("cannot open block image {path}: {source}", path = path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot determine the size of block image {path}: {source}", path = path.display())]
    Size {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("block device id {id:?} is longer than {max} bytes", max = disk::ID_BYTES)]
    IdTooLong { id: String },
    #[error(transparent)]
    Virtio(#[from] VirtioError),
}

#[cfg(test)]
mod tests;
