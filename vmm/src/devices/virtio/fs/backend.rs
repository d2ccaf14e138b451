//! The vhost-user session with one virtio-fs back-end: negotiation when the VM is built, ring
//! setup when the driver starts the device, ring teardown when it resets it.

use std::os::fd::{AsRawFd, RawFd};

use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::{
    Frontend, VhostUserFrontend, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
use vmm_sys_util::eventfd::EventFd;

use super::{FsDeviceConfig, FsError};
use crate::GuestMemory;

/// The back-end's virtio features that may reach the guest: the rings are the back-end's to
/// run, so anything it offers about them, but nothing that needs the VMM (notification queue,
/// shared memory window) and never vhost-user's own bits.
const GUEST_FEATURES: u64 =
    1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_INDIRECT_DESC | 1 << VIRTIO_RING_F_EVENT_IDX;

/// VHOST_USER_F_PROTOCOL_FEATURES: a vhost-user bit in the virtio feature word.
const PROTOCOL_FEATURES: u64 = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();

/// Multiple queues, and an acknowledgement for every request so failures are seen where they
/// happen.
const WANTED_PROTOCOL: VhostUserProtocolFeatures =
    VhostUserProtocolFeatures::MQ.union(VhostUserProtocolFeatures::REPLY_ACK);

/// Why starting or stopping the rings failed (logged by the device; the guest sees
/// DEVICE_NEEDS_RESET).
#[derive(Debug, thiserror::Error)]
pub(super) enum SetupError {
    #[error("{request} failed")]
    Request {
        request: String,
        #[source]
        source: vhost::Error,
    },
    #[error("guest memory at {0:#x} is not file-backed, so the back-end cannot map it")]
    NotShared(u64),
    #[error("a ring of queue {0} does not lie within one guest memory region")]
    RingAddress(usize),
}

fn request(request: impl Into<String>) -> impl FnOnce(vhost::Error) -> SetupError {
    let request = request.into();
    move |source| SetupError::Request { request, source }
}

pub(super) struct Session {
    frontend: Frontend,
    /// What the back-end offered.
    features: u64,
    /// VHOST_USER_F_PROTOCOL_FEATURES is in use: rings start disabled until SET_VRING_ENABLE.
    protocol: bool,
}

impl Session {
    /// Connects to the back-end, takes ownership and negotiates the vhost-user protocol.
    pub fn connect(config: &FsDeviceConfig) -> Result<Self, FsError> {
        let queues = 1 + usize::from(config.request_queues);
        let failed = |request: &'static str| {
            move |source| FsError::Request {
                socket: config.socket.clone(),
                tag: config.tag.clone(),
                request,
                source,
            }
        };
        let mut frontend = Frontend::connect(&config.socket, queues as u64).map_err(|source| {
            FsError::Connect {
                socket: config.socket.clone(),
                tag: config.tag.clone(),
                source,
            }
        })?;
        frontend.set_owner().map_err(failed("SET_OWNER"))?;
        let features = frontend.get_features().map_err(failed("GET_FEATURES"))?;
        if features & (1 << VIRTIO_F_VERSION_1) == 0 {
            return Err(FsError::LegacyBackend {
                socket: config.socket.clone(),
                tag: config.tag.clone(),
            });
        }
        let protocol = features & PROTOCOL_FEATURES != 0;
        if protocol {
            let offered = frontend
                .get_protocol_features()
                .map_err(failed("GET_PROTOCOL_FEATURES"))?;
            let acked = offered & WANTED_PROTOCOL;
            frontend
                .set_protocol_features(acked)
                .map_err(failed("SET_PROTOCOL_FEATURES"))?;
            if acked.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
            if acked.contains(VhostUserProtocolFeatures::MQ) {
                let offered = frontend.get_queue_num().map_err(failed("GET_QUEUE_NUM"))?;
                if offered < queues as u64 {
                    return Err(FsError::TooManyQueues {
                        socket: config.socket.clone(),
                        tag: config.tag.clone(),
                        offered,
                        wanted: queues,
                    });
                }
            }
        }
        Ok(Self {
            frontend,
            features,
            protocol,
        })
    }

    /// The virtio features to offer the guest.
    pub fn guest_features(&self) -> u64 {
        self.features & GUEST_FEATURES
    }

    /// Hands the rings to the back-end: features, the memory table, then each queue's layout
    /// (in the VMM's virtual addresses, as vhost-user wants), start index, call and kick fds.
    pub fn start(
        &mut self,
        acked: u64,
        mem: &GuestMemory,
        queues: &[Queue],
        kicks: &[EventFd],
        call: &EventFd,
    ) -> Result<(), SetupError> {
        let vhost_bits = if self.protocol { PROTOCOL_FEATURES } else { 0 };
        self.frontend
            .set_features(acked | vhost_bits)
            .map_err(request("SET_FEATURES"))?;
        let regions = memory_table(mem)?;
        self.frontend
            .set_mem_table(&regions)
            .map_err(request("SET_MEM_TABLE"))?;
        for (index, (queue, kick)) in queues.iter().zip(kicks).enumerate() {
            let ring =
                |addr, len| host_address(mem, addr, len).ok_or(SetupError::RingAddress(index));
            let size = usize::from(queue.size());
            let layout = VringConfigData {
                queue_max_size: queue.max_size(),
                queue_size: queue.size(),
                flags: 0,
                desc_table_addr: ring(queue.desc_table(), 16 * size)?,
                used_ring_addr: ring(queue.used_ring(), 6 + 8 * size)?,
                avail_ring_addr: ring(queue.avail_ring(), 6 + 2 * size)?,
                log_addr: None,
            };
            let f = &mut self.frontend;
            f.set_vring_num(index, queue.size())
                .map_err(request(format!("SET_VRING_NUM of queue {index}")))?;
            f.set_vring_addr(index, &layout)
                .map_err(request(format!("SET_VRING_ADDR of queue {index}")))?;
            f.set_vring_base(index, 0)
                .map_err(request(format!("SET_VRING_BASE of queue {index}")))?;
            f.set_vring_call(index, call)
                .map_err(request(format!("SET_VRING_CALL of queue {index}")))?;
            f.set_vring_kick(index, kick)
                .map_err(request(format!("SET_VRING_KICK of queue {index}")))?;
            if self.protocol {
                f.set_vring_enable(index, true)
                    .map_err(request(format!("SET_VRING_ENABLE of queue {index}")))?;
            }
        }
        Ok(())
    }

    /// Stops the first `queues` rings (GET_VRING_BASE stops a ring in vhost-user).
    pub fn stop(&mut self, queues: usize) -> Result<(), SetupError> {
        for index in 0..queues {
            if self.protocol {
                self.frontend
                    .set_vring_enable(index, false)
                    .map_err(request(format!("SET_VRING_ENABLE of queue {index}")))?;
            }
            self.frontend
                .get_vring_base(index)
                .map_err(request(format!("GET_VRING_BASE of queue {index}")))?;
        }
        Ok(())
    }
}

impl AsRawFd for Session {
    fn as_raw_fd(&self) -> RawFd {
        self.frontend.as_raw_fd()
    }
}

/// Every guest RAM region with the fd and offset the back-end maps it from.
fn memory_table(mem: &GuestMemory) -> Result<Vec<VhostUserMemoryRegionInfo>, SetupError> {
    mem.iter()
        .map(|region| {
            VhostUserMemoryRegionInfo::from_guest_region(region)
                .map_err(|_| SetupError::NotShared(region.start_addr().0))
        })
        .collect()
}

/// The VMM's virtual address of `len` guest bytes at `addr`, if they lie in one region.
fn host_address(mem: &GuestMemory, addr: u64, len: usize) -> Option<u64> {
    let region = mem.find_region(GuestAddress(addr))?;
    let offset = addr - region.start_addr().0;
    if offset.checked_add(len as u64)? > region.len() {
        return None;
    }
    let host = region.get_host_address(MemoryRegionAddress(offset)).ok()?;
    Some(host as u64)
}
