//! virtio-fs as a vhost-user front-end: the guest's FUSE requests go straight to a back-end
//! (virtiofsd) that maps guest memory from a memfd, takes the queues' ioeventfds as its kick fds
//! and signals the device's irqfd itself. The VMM only owns the register window, feature
//! negotiation, and the vhost-user messages that start and stop the rings.

mod backend;
mod device;

use std::path::PathBuf;

pub use crate::config::FsDeviceConfig;
pub use device::Fs;

use super::VirtioError;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error(
        "virtio-fs {tag:?}: cannot connect to the vhost-user back-end at {socket}",
        socket = socket.display()
    )]
    Connect {
        socket: PathBuf,
        tag: String,
        #[source]
        source: vhost::Error,
    },
    #[error(
        "virtio-fs {tag:?}: {request} to the vhost-user back-end at {socket} failed",
        socket = socket.display()
    )]
    Request {
        socket: PathBuf,
        tag: String,
        request: &'static str,
        #[source]
        source: vhost::Error,
    },
    #[error(
        "virtio-fs {tag:?}: the vhost-user back-end at {socket} does not offer VIRTIO_F_VERSION_1",
        socket = socket.display()
    )]
    LegacyBackend { socket: PathBuf, tag: String },
    #[error(
        "virtio-fs {tag:?}: the vhost-user back-end at {socket} serves {offered} queues, \
         {wanted} configured (the high-priority queue and {request_queues} request queues)",
        socket = socket.display(),
        request_queues = wanted - 1
    )]
    TooManyQueues {
        socket: PathBuf,
        tag: String,
        offered: u64,
        wanted: usize,
    },
    #[error(transparent)]
    Virtio(#[from] VirtioError),
}

#[cfg(test)]
mod test_backend;
#[cfg(test)]
mod tests;
