//! The virtio-fs device: config space and queues for the transport, the vhost-user session for
//! the rings, and a watch on the back-end's socket in the event loop.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_bindings::virtio_ids::VIRTIO_ID_FS;
use vmm_sys_util::epoll::EventSet;

use super::backend::Session;
use super::{FsDeviceConfig, FsError};
use crate::devices::virtio::{
    error_chain, read_config_bytes, ActivateError, VirtioCommon, VirtioDevice, IRQ_VRING,
};
use crate::vstate::{VmExitReason, VmExitSignal};
use crate::GuestMemory;

/// virtio_fs_config.tag: the mount tag, NUL-padded (not NUL-terminated when 36 bytes long).
const TAG_BYTES: usize = 36;
/// The tag, then num_request_queues as a little-endian u32.
const CONFIG_BYTES: usize = TAG_BYTES + 4;

const TOKEN_BACKEND: u32 = 0;

pub struct Fs {
    common: VirtioCommon,
    config: [u8; CONFIG_BYTES],
    socket: PathBuf,
    tag: String,
    session: Session,
    /// The back-end closed its socket; reported once, then no longer watched.
    backend_gone: bool,
    /// Told when the back-end goes away: the VM ends with it.
    exit: Option<Arc<VmExitSignal>>,
}

impl Fs {
    /// Connects to the back-end and negotiates with it; the queues reach it on activation.
    pub fn new(config: &FsDeviceConfig) -> Result<Self, FsError> {
        let session = Session::connect(config)?;
        let queue_sizes = vec![config.queue_size; 1 + usize::from(config.request_queues)];
        let common = VirtioCommon::new(session.guest_features(), &queue_sizes)?;
        let mut space = [0u8; CONFIG_BYTES];
        // Validation keeps the tag within TAG_BYTES; a longer one would be cut, not overflow.
        let tag = config.tag.as_bytes();
        let len = tag.len().min(TAG_BYTES);
        space[..len].copy_from_slice(&tag[..len]);
        space[TAG_BYTES..].copy_from_slice(&u32::from(config.request_queues).to_le_bytes());
        Ok(Self {
            common,
            config: space,
            socket: config.socket.clone(),
            tag: config.tag.clone(),
            session,
            backend_gone: false,
            exit: None,
        })
    }

    /// Ends the VM through `exit` when the back-end goes away.
    pub fn with_exit_signal(mut self, exit: Arc<VmExitSignal>) -> Self {
        self.exit = Some(exit);
        self
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    #[cfg(test)]
    pub(crate) fn backend_gone(&self) -> bool {
        self.backend_gone
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_FS
    }
    fn common(&self) -> &VirtioCommon {
        &self.common
    }
    fn common_mut(&mut self) -> &mut VirtioCommon {
        &mut self.common
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, mem: GuestMemory) -> Result<(), ActivateError> {
        self.common.activate(mem.clone())?;
        // Set before the back-end can first signal the irqfd.
        self.common.interrupt.set_sticky(IRQ_VRING);
        let common = &self.common;
        let started = self.session.start(
            common.acked_features,
            &mem,
            &common.queues,
            &common.queue_events,
            common.interrupt.event(),
        );
        if let Err(e) = started {
            log::error!(
                "virtio-fs {:?}: cannot start the rings on the vhost-user back-end at {}: {}",
                self.tag,
                self.socket.display(),
                error_chain(&e)
            );
            self.common.interrupt.clear_sticky();
            self.common.mem = None;
            return Err(ActivateError::Backend);
        }
        Ok(())
    }

    fn reset(&mut self) {
        if self.is_activated() {
            if let Err(e) = self.session.stop(self.common.queues.len()) {
                log::error!(
                    "virtio-fs {:?}: cannot stop the rings on the vhost-user back-end at {}: {}",
                    self.tag,
                    self.socket.display(),
                    error_chain(&e)
                );
            }
        }
        self.common.reset();
    }
}

impl MutEventSubscriber for Fs {
    fn init(&mut self, ops: &mut EventOps) {
        // Only hang-ups: replies on this socket are read where the requests are sent, and the
        // kick fds are the back-end's to read.
        let events = Events::with_data(
            &self.session,
            TOKEN_BACKEND,
            EventSet::HANG_UP | EventSet::ERROR,
        );
        if let Err(e) = ops.add(events) {
            log::error!(
                "virtio-fs {:?}: cannot watch the vhost-user back-end socket {}: {e:?}",
                self.tag,
                self.socket.display()
            );
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.data() != TOKEN_BACKEND {
            log::warn!("virtio-fs: unexpected event token {}", events.data());
            return;
        }
        if !self.backend_gone {
            log::error!(
                "virtio-fs {:?}: the vhost-user back-end at {} closed its socket; the guest's \
                 file system no longer answers",
                self.tag,
                self.socket.display()
            );
            self.backend_gone = true;
            if let Some(exit) = &self.exit {
                exit.signal(VmExitReason::BackendGone {
                    device: format!("virtio-fs {:?} ({})", self.tag, self.socket.display()),
                });
            }
        }
        // Hang-ups are level-triggered: keeping the fd would wake the loop for ever.
        if let Err(e) = ops.remove(events) {
            log::error!(
                "virtio-fs {:?}: cannot stop watching the back-end socket: {e:?}",
                self.tag
            );
        }
    }
}
