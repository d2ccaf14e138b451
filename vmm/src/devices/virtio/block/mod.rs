//! virtio-blk backed by a host file (or block device): read, write, flush and get-id on one
//! request queue, with an optional read-only mode.

mod device;
mod disk;
mod request;

use std::io;
use std::path::PathBuf;

pub use crate::config::BlockDeviceConfig;
pub use device::Block;
pub use disk::DiskImage;

use super::VirtioError;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("cannot open block image {path}", path = path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot determine the size of block image {path}", path = path.display())]
    Size {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("block image {path} is neither a regular file nor a block device", path = path.display())]
    NotADisk { path: PathBuf },
    #[error("block device id {id:?} is longer than {max} bytes", max = disk::ID_BYTES)]
    IdTooLong { id: String },
    #[error(transparent)]
    Virtio(#[from] VirtioError),
}

#[cfg(test)]
mod tests;
