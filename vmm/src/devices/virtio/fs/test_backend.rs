//! A fake vhost-user back-end for the tests: listens on a socket in a temporary directory,
//! serves one front-end on its own thread, answers like virtiofsd and records every request.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vhost::vhost_user::message::*;
use vhost::vhost_user::{
    Backend, BackendReqHandler, Error, GpuBackend, Result, VhostUserBackendReqHandlerMut,
};
use vhost::VhostUserMemoryRegionBase;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use vmm_sys_util::tempdir::TempDir;

/// What virtiofsd 1.14 offers, plus bit 0 (VIRTIO_FS_F_NOTIFICATION) that the VMM must not pass on.
pub const FEATURES: u64 = 1 << VIRTIO_F_VERSION_1
    | 1 << VIRTIO_RING_F_INDIRECT_DESC
    | 1 << VIRTIO_RING_F_EVENT_IDX
    | 1
    | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    | VhostUserVirtioFeatures::LOG_ALL.bits();

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub features: u64,
    pub protocol: VhostUserProtocolFeatures,
    pub queue_num: u64,
    pub refuse_mem_table: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            features: FEATURES,
            protocol: VhostUserProtocolFeatures::MQ
                | VhostUserProtocolFeatures::REPLY_ACK
                | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
                | VhostUserProtocolFeatures::RESET_DEVICE,
            queue_num: 2,
            refuse_mem_table: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    pub desc: u64,
    pub used: u64,
    pub avail: u64,
}

/// One SET_MEM_TABLE region, copied out of the packed message.
pub struct Region {
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    pub user_addr: u64,
    pub mmap_offset: u64,
    pub file: File,
}

/// Everything the front-end told the back-end.
#[derive(Default)]
pub struct Record {
    pub owner: bool,
    pub features: Vec<u64>,
    pub protocol: Option<u64>,
    pub regions: Vec<Region>,
    pub nums: BTreeMap<u32, u32>,
    pub rings: BTreeMap<u32, Ring>,
    pub bases: BTreeMap<u32, u32>,
    pub kicks: BTreeMap<u8, File>,
    pub calls: BTreeMap<u8, File>,
    pub enabled: BTreeMap<u32, bool>,
    /// Queues stopped with GET_VRING_BASE, in order.
    pub stopped: Vec<u32>,
}

pub struct FakeBackend {
    pub options: Options,
    pub record: Record,
}

/// A served socket: the back-end state and a way to make it hang up.
pub struct Served {
    pub socket: PathBuf,
    pub backend: Arc<Mutex<FakeBackend>>,
    connection: Arc<Mutex<Option<UnixStream>>>,
    thread: Option<JoinHandle<()>>,
    _dir: TempDir,
}

impl Served {
    pub fn record(&self) -> std::sync::MutexGuard<'_, FakeBackend> {
        self.backend.lock().unwrap()
    }

    /// Closes the back-end's end of the connection, as a back-end that exits would.
    pub fn hang_up(&mut self) {
        if let Some(stream) = self.connection.lock().unwrap().take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stream) = self.connection.lock().unwrap().take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Listens on a fresh socket and serves one front-end with `options`.
pub fn serve(options: Options) -> Served {
    let dir = TempDir::new().unwrap();
    let socket = dir.as_path().join("fs.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let backend = Arc::new(Mutex::new(FakeBackend {
        options,
        record: Record::default(),
    }));
    let connection = Arc::new(Mutex::new(None));
    let thread = {
        let backend = backend.clone();
        let connection = connection.clone();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut handler = BackendReqHandler::from_stream(stream, backend);
            *connection.lock().unwrap() = Some(handler.try_clone_connection().unwrap());
            while handler.handle_request().is_ok() {}
        })
    };
    Served {
        socket,
        backend,
        connection,
        thread: Some(thread),
        _dir: dir,
    }
}

/// A socket whose listener accepts and at once closes every connection.
pub fn serve_and_close() -> (TempDir, PathBuf) {
    let dir = TempDir::new().unwrap();
    let socket = dir.as_path().join("fs.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        while let Ok((stream, _)) = listener.accept() {
            drop(stream);
        }
    });
    (dir, socket)
}

fn refused<T>() -> Result<T> {
    Err(Error::InvalidOperation(
        "not implemented by the fake back-end",
    ))
}

impl VhostUserBackendReqHandlerMut for FakeBackend {
    fn set_owner(&mut self) -> Result<()> {
        self.record.owner = true;
        Ok(())
    }
    fn reset_owner(&mut self) -> Result<()> {
        self.record.owner = false;
        Ok(())
    }
    fn reset_device(&mut self) -> Result<()> {
        Ok(())
    }
    fn get_features(&mut self) -> Result<u64> {
        Ok(self.options.features)
    }
    fn set_features(&mut self, features: u64) -> Result<()> {
        self.record.features.push(features);
        Ok(())
    }
    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy_listening: Option<bool>,
    ) -> Result<Option<Vec<VhostUserMemoryRegionBase>>> {
        if self.options.refuse_mem_table {
            return Err(Error::InvalidParam);
        }
        self.record.regions = ctx
            .iter()
            .zip(files)
            .map(|(region, file)| Region {
                guest_phys_addr: region.guest_phys_addr,
                memory_size: region.memory_size,
                user_addr: region.user_addr,
                mmap_offset: region.mmap_offset,
                file,
            })
            .collect();
        Ok(None)
    }
    fn set_vring_num(&mut self, index: u32, num: u32) -> Result<()> {
        self.record.nums.insert(index, num);
        Ok(())
    }
    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> Result<()> {
        let ring = Ring {
            desc: descriptor,
            used,
            avail: available,
        };
        self.record.rings.insert(index, ring);
        Ok(())
    }
    fn set_vring_base(&mut self, index: u32, base: u32) -> Result<()> {
        self.record.bases.insert(index, base);
        Ok(())
    }
    fn get_vring_base(&mut self, index: u32) -> Result<VhostUserVringState> {
        self.record.stopped.push(index);
        self.record.enabled.insert(index, false);
        Ok(VhostUserVringState::new(index, 0))
    }
    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> Result<()> {
        self.record
            .kicks
            .insert(index, fd.ok_or(Error::InvalidParam)?);
        Ok(())
    }
    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> Result<()> {
        self.record
            .calls
            .insert(index, fd.ok_or(Error::InvalidParam)?);
        Ok(())
    }
    fn set_vring_err(&mut self, _index: u8, _fd: Option<File>) -> Result<()> {
        refused()
    }
    fn get_protocol_features(&mut self) -> Result<VhostUserProtocolFeatures> {
        Ok(self.options.protocol)
    }
    fn set_protocol_features(&mut self, features: u64) -> Result<()> {
        self.record.protocol = Some(features);
        Ok(())
    }
    fn get_queue_num(&mut self) -> Result<u64> {
        Ok(self.options.queue_num)
    }
    fn set_vring_enable(&mut self, index: u32, enable: bool) -> Result<()> {
        self.record.enabled.insert(index, enable);
        Ok(())
    }
    fn get_config(&mut self, _: u32, _: u32, _: VhostUserConfigFlags) -> Result<Vec<u8>> {
        refused()
    }
    fn set_config(&mut self, _: u32, _: &[u8], _: VhostUserConfigFlags) -> Result<()> {
        refused()
    }
    fn set_backend_req_fd(&mut self, _backend: Backend) {}
    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> Result<()> {
        refused()
    }
    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> Result<File> {
        refused()
    }
    fn get_inflight_fd(&mut self, _: &VhostUserInflight) -> Result<(VhostUserInflight, File)> {
        refused()
    }
    fn set_inflight_fd(&mut self, _: &VhostUserInflight, _file: File) -> Result<()> {
        refused()
    }
    fn get_max_mem_slots(&mut self) -> Result<u64> {
        refused()
    }
    fn add_mem_region(
        &mut self,
        _: &VhostUserSingleMemoryRegion,
        _fd: File,
        _postcopy_listening: Option<bool>,
    ) -> Result<Option<VhostUserMemoryRegionBase>> {
        refused()
    }
    fn remove_mem_region(&mut self, _: &VhostUserSingleMemoryRegion) -> Result<()> {
        refused()
    }
    fn set_device_state_fd(
        &mut self,
        _: VhostTransferStateDirection,
        _: VhostTransferStatePhase,
        _fd: File,
    ) -> Result<Option<File>> {
        refused()
    }
    fn check_device_state(&mut self) -> Result<()> {
        refused()
    }
    fn get_shmem_config(&mut self) -> Result<VhostUserShMemConfig> {
        refused()
    }
    fn set_log_base(&mut self, _log: &VhostUserLog, _file: File) -> Result<()> {
        refused()
    }
}
