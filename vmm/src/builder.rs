//! Assembles a microVM from a `VmConfig`: guest memory, the KVM VM, kernel and boot structures,
//! devices and vCPUs; then runs it with an event loop on the calling thread.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber, SubscriberOps};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::Kvm;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::layout::{
    ram_regions, virtio_mmio_slot, I8042_PORT, I8042_PORT_LEN, SERIAL_COM1_GSI, SERIAL_COM1_PORT,
    SERIAL_COM1_PORT_LEN, ZERO_PAGE_ADDR,
};
use crate::arch::mptable::{write_mptable, MptableError};
use crate::arch::regs::{write_boot_tables, RegsError};
use crate::arch::zero_page::{build_zero_page, e820_map, BootInfo, ZeroPageError};
use crate::config::host::HostKind;
use crate::config::{ConfigError, HostLimits, SeccompMode, SerialOutput, VmConfig};
use crate::devices::bus::{Bus, BusError};
use crate::devices::i8042::I8042Device;
use crate::devices::serial::{
    Capped, SerialDevice, SerialOutput as SerialWriter, MAX_CONSOLE_FILE_BYTES,
};
use crate::devices::virtio::block::{Block, BlockError};
use crate::devices::virtio::fs::{Fs, FsError};
use crate::devices::virtio::net::{Net, NetError};
use crate::devices::virtio::vsock::{Vsock, VsockError};
use crate::devices::virtio::{attach_mmio_device, MmioSlot, VirtioError};
use crate::loader::{self, LoadError};
use crate::seccomp::ThreadRole;
use crate::vstate::memory::{self, Backing, MemoryError};
use crate::vstate::reflect::ReflectionLog;
use crate::vstate::vcpu::{register_kick_handler, stop_vcpus, BootEntry, Vcpu, VcpuError};
use crate::vstate::vm::{Vm, VmError};
use crate::vstate::{VmExitReason, VmExitSignal};
use crate::{EventManager, GuestMemory};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error("cannot open /dev/kvm: {0}")]
    Kvm(kvm_ioctls::Error),
    #[error("kvm_fd {0}: {1}")]
    KvmFd(i32, io::Error),
    #[error("KVM_GET_SUPPORTED_CPUID failed: {0}")]
    SupportedCpuid(kvm_ioctls::Error),
    #[error("cannot allocate {mib} MiB of guest memory")]
    GuestMemory { mib: u64, source: MemoryError },
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("boot tables")]
    BootTables(#[from] RegsError),
    #[error("zero page")]
    ZeroPage(#[from] ZeroPageError),
    #[error("cannot write the zero page: {0}")]
    ZeroPageCopy(vm_memory::GuestMemoryError),
    #[error("MP table")]
    Mptable(#[from] MptableError),
    #[error("serial output {}", path.display())]
    SerialFile {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("cannot create an eventfd: {0}")]
    EventFd(io::Error),
    #[error("KVM_IRQFD for GSI {gsi} failed")]
    Irqfd { gsi: u32, source: kvm_ioctls::Error },
    #[error("device bus")]
    Bus(#[from] BusError),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error(transparent)]
    Vsock(#[from] VsockError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Virtio(#[from] VirtioError),
    #[error("too many virtio devices: {count} configured, {max} MMIO slots")]
    TooManyVirtioDevices { count: usize, max: usize },
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("cannot register the VM exit eventfds with the event loop")]
    ExitWatch,
    #[error("event manager: {0:?}")]
    EventManager(event_manager::Error),
}

/// A VM ready to run.
pub struct MicroVm {
    // Field order is drop order: vCPUs before the VM fd, the VM before its memory.
    vcpus: Vec<Vcpu>,
    event_manager: EventManager,
    exit: Arc<VmExitSignal>,
    reset_evt: EventFd,
    vm: Vm,
    mem: GuestMemory,
    io_bus: Bus,
    mmio_bus: Bus,
    /// Set when emulation-failure reflection is on.
    reflections: Option<Arc<ReflectionLog>>,
    seccomp: SeccompMode,
}

impl MicroVm {
    pub fn guest_memory(&self) -> &GuestMemory {
        &self.mem
    }

    /// Starts the vCPUs and serves device events until the guest stops; then stops every vCPU
    /// thread and returns why the VM ended.
    pub fn run(mut self) -> Result<VmExitReason, BuildError> {
        let watcher = Arc::new(Mutex::new(ExitWatcher::new(
            self.exit.clone(),
            self.reset_evt.try_clone().map_err(BuildError::EventFd)?,
        )));
        self.event_manager.add_subscriber(watcher.clone());
        if !watcher.lock().unwrap_or_else(|e| e.into_inner()).watching {
            // Nothing could end the loop: do not start a VM we could not stop.
            return Err(BuildError::ExitWatch);
        }

        register_kick_handler()?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(self.vcpus.len());
        for vcpu in self.vcpus.drain(..) {
            match vcpu.start(stop.clone(), self.exit.clone()) {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    stop_vcpus(&stop, threads);
                    return Err(e.into());
                }
            }
        }

        // The vCPUs install theirs before their first KVM_RUN; this thread before it serves
        // the first device event.
        if self.seccomp == SeccompMode::On {
            if let Err(e) = crate::seccomp::install(ThreadRole::Vmm) {
                stop_vcpus(&stop, threads);
                return Err(e.into());
            }
        }
        let mut result = Ok(());
        while !watcher.lock().unwrap_or_else(|e| e.into_inner()).done {
            if let Err(e) = self.event_manager.run() {
                result = Err(BuildError::EventManager(e));
                break;
            }
        }
        stop_vcpus(&stop, threads);
        if let Some(reflections) = self.reflections.as_ref().filter(|r| r.total() > 0) {
            log::info!("{reflections}");
        }
        result?;
        Ok(self.exit.reason().unwrap_or(VmExitReason::GuestReset))
    }

    /// The port I/O bus, for devices added after building (tests, tools).
    pub fn io_bus(&self) -> &Bus {
        &self.io_bus
    }

    pub fn mmio_bus(&self) -> &Bus {
        &self.mmio_bus
    }

    pub fn vm(&self) -> &Vm {
        &self.vm
    }
}

/// Ends the event loop when a vCPU reports a stop or the guest resets through the i8042.
struct ExitWatcher {
    exit: Arc<VmExitSignal>,
    reset_evt: EventFd,
    /// Both eventfds are registered with the event loop.
    watching: bool,
    done: bool,
}

impl ExitWatcher {
    fn new(exit: Arc<VmExitSignal>, reset_evt: EventFd) -> Self {
        Self {
            exit,
            reset_evt,
            watching: false,
            done: false,
        }
    }
}

impl MutEventSubscriber for ExitWatcher {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.reset_evt.as_raw_fd() {
            let _ = self.reset_evt.read();
            self.exit.signal(VmExitReason::GuestReset);
        } else {
            let _ = self.exit.eventfd().read();
        }
        self.done = true;
    }

    fn init(&mut self, ops: &mut EventOps) {
        self.watching = true;
        for fd in [self.exit.eventfd(), &self.reset_evt] {
            if let Err(e) = ops.add(Events::new(fd, EventSet::IN)) {
                log::error!("cannot watch the VM exit eventfd: {e:?}");
                self.watching = false;
            }
        }
    }
}

/// Guest RAM is shared through a memfd only when a vhost-user back-end needs to map it.
fn memory_backing(config: &VmConfig) -> Backing {
    if config.fs.is_empty() {
        Backing::Anonymous
    } else {
        Backing::SharedMemfd
    }
}

fn create_guest_memory(config: &VmConfig) -> Result<GuestMemory, BuildError> {
    let ranges: Vec<(GuestAddress, usize)> = ram_regions(config.mem_bytes())
        .into_iter()
        .map(|(addr, size)| (addr, size as usize))
        .collect();
    memory::create(&ranges, memory_backing(config)).map_err(|source| BuildError::GuestMemory {
        mib: config.mem_mib,
        source,
    })
}

fn serial_writer(output: &SerialOutput) -> Result<SerialWriter, BuildError> {
    Ok(match output {
        SerialOutput::Stdout => Box::new(io::stdout()),
        SerialOutput::File(path) => Box::new(Capped::new(
            File::options()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| BuildError::SerialFile {
                    path: path.clone(),
                    source,
                })?,
            MAX_CONSOLE_FILE_BYTES,
        )),
    })
}

/// Adds COM1 and the i8042; returns the eventfd the i8042 signals on reset.
fn attach_legacy_devices(
    vm: &Vm,
    io_bus: &Bus,
    serial_output: SerialWriter,
) -> Result<EventFd, BuildError> {
    let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(BuildError::EventFd)?;
    vm.fd()
        .register_irqfd(&serial_irq, SERIAL_COM1_GSI)
        .map_err(|source| BuildError::Irqfd {
            gsi: SERIAL_COM1_GSI,
            source,
        })?;
    let serial = SerialDevice::new(serial_irq, serial_output);
    io_bus.insert(
        Arc::new(Mutex::new(serial)),
        SERIAL_COM1_PORT,
        SERIAL_COM1_PORT_LEN,
    )?;

    let reset_evt = EventFd::new(EFD_NONBLOCK).map_err(BuildError::EventFd)?;
    let i8042 = I8042Device::new(reset_evt.try_clone().map_err(BuildError::EventFd)?);
    io_bus.insert(Arc::new(Mutex::new(i8042)), I8042_PORT, I8042_PORT_LEN)?;
    Ok(reset_evt)
}

/// Adds the configured virtio-mmio devices (block, vsock, fs, net), each in the next slot from
/// `arch::layout::virtio_mmio_slot`, and returns their command-line fragments.
fn attach_virtio_devices(
    config: &VmConfig,
    vm: &Vm,
    mmio_bus: &Bus,
    event_manager: &mut EventManager,
    mem: &GuestMemory,
    exit: &Arc<VmExitSignal>,
) -> Result<Vec<String>, BuildError> {
    let count = config.block.len()
        + usize::from(config.vsock.is_some())
        + config.fs.len()
        + config.net.len();
    let slots: Vec<MmioSlot> = (0..count)
        .map_while(virtio_mmio_slot)
        .map(|(base, gsi)| MmioSlot { base, gsi })
        .collect();
    if slots.len() < count {
        let max = (0..).map_while(virtio_mmio_slot).count();
        return Err(BuildError::TooManyVirtioDevices { count, max });
    }
    let mut slots = slots.into_iter();
    let mut fragments = Vec::with_capacity(count);
    // One call for devices of different types (attach_mmio_device is generic over them).
    macro_rules! attach {
        ($device:expr, $slot:expr) => {
            fragments.push(attach_mmio_device(
                vm.fd(),
                mmio_bus,
                event_manager,
                mem,
                Arc::new(Mutex::new($device)),
                $slot,
            )?)
        };
    }
    for (block, slot) in config.block.iter().zip(slots.by_ref()) {
        attach!(Block::new(block)?, slot);
    }
    if let (Some(vsock), Some(slot)) = (&config.vsock, slots.next()) {
        attach!(Vsock::new(vsock)?, slot);
    }
    for (fs, slot) in config.fs.iter().zip(slots.by_ref()) {
        attach!(Fs::new(fs)?.with_exit_signal(exit.clone()), slot);
    }
    for (index, (net, slot)) in config.net.iter().zip(slots.by_ref()).enumerate() {
        attach!(Net::new(index, net)?, slot);
    }
    Ok(fragments)
}

/// `/dev/kvm`: the inherited descriptor `fd`, or opened here.
fn open_kvm(fd: Option<i32>) -> Result<Kvm, BuildError> {
    let Some(fd) = fd else {
        return Kvm::new().map_err(BuildError::Kvm);
    };
    // SAFETY: fcntl on any number is harmless; a closed one fails with EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(BuildError::KvmFd(fd, std::io::Error::last_os_error()));
    }
    // SAFETY: the descriptor is open and was handed to us (config `kvm_fd`) to own; the version
    // check below tells /dev/kvm from anything else.
    let kvm = unsafe { Kvm::from_raw_fd(fd) };
    match kvm.get_api_version() {
        12 => Ok(kvm),
        _ => Err(BuildError::KvmFd(
            fd,
            std::io::Error::other("not /dev/kvm (KVM_GET_API_VERSION is not 12)"),
        )),
    }
}

/// Builds the VM described by `config` (checked against this host first).
pub fn build_microvm(config: &VmConfig) -> Result<MicroVm, BuildError> {
    let kvm = open_kvm(config.kvm_fd)?;
    let kvm_max_vcpus = u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX);
    let limits = HostLimits::new(kvm_max_vcpus);
    config.validate(&limits)?;
    // Validation bounds vcpus by MAX_VCPUS, so this always fits in a u8.
    let num_vcpus = u8::try_from(config.vcpus).map_err(|_| ConfigError::Vcpus {
        value: config.vcpus,
        max: limits.max_vcpus,
    })?;

    let mem = create_guest_memory(config)?;
    let vm = Vm::new(&kvm, &mem)?;
    let mut event_manager = EventManager::new().map_err(BuildError::EventManager)?;
    let io_bus = Bus::new();
    let mmio_bus = Bus::new();

    let kernel = loader::load_kernel(&mem, &config.kernel)?;
    let initrd = match &config.initrd {
        Some(path) => Some(loader::load_initrd(
            &mem,
            config.mem_bytes(),
            kernel.end,
            path,
        )?),
        None => None,
    };

    let reset_evt = attach_legacy_devices(&vm, &io_bus, serial_writer(&config.serial)?)?;
    let exit = Arc::new(VmExitSignal::new().map_err(BuildError::EventFd)?);
    let fragments = attach_virtio_devices(config, &vm, &mmio_bus, &mut event_manager, &mem, &exit)?;
    let cmdline = loader::compose_cmdline(&config.cmdline, &fragments);
    let cmdline_len = loader::write_cmdline(&mem, &cmdline)?;

    let cr3 = write_boot_tables(&mem)?;
    write_mptable(&mem, num_vcpus)?;
    let boot_info = BootInfo {
        setup_header: kernel.setup_header,
        cmdline_addr: crate::arch::layout::CMDLINE_ADDR,
        cmdline_len,
        initrd,
    };
    let zero_page = build_zero_page(&e820_map(config.mem_bytes())?, &boot_info)?;
    mem.write_obj(zero_page, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(BuildError::ZeroPageCopy)?;

    let supported_cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(BuildError::SupportedCpuid)?;
    let host = HostKind::detect();
    let reflect = config.reflect_emulation_failures.enabled_on(&host);
    if reflect {
        log::info!(
            "emulation-failure reflection on ({}; {host})",
            config.reflect_emulation_failures
        );
    }
    let reflections = reflect.then(|| Arc::new(ReflectionLog::default()));
    let mut vcpus = Vec::with_capacity(usize::from(num_vcpus));
    for index in 0..num_vcpus {
        let mut vcpu = Vcpu::new(
            vm.fd(),
            index,
            io_bus.clone(),
            mmio_bus.clone(),
            mem.clone(),
        )?;
        let boot = (index == 0).then_some(BootEntry {
            entry: kernel.entry,
            cr3,
        });
        vcpu.configure(&supported_cpuid, num_vcpus, config.cpu_template, boot)?;
        if let Some(log) = &reflections {
            vcpu.enable_emulation_reflection(log.clone())?;
        }
        if config.seccomp == SeccompMode::On {
            vcpu.enable_seccomp();
        }
        vcpus.push(vcpu);
    }
    log::info!(
        "built VM: {} vCPU(s), {} MiB, kernel entry {:#x}, template {}, cmdline {cmdline:?}",
        num_vcpus,
        config.mem_mib,
        kernel.entry,
        config.cpu_template
    );

    Ok(MicroVm {
        vcpus,
        event_manager,
        exit,
        reset_evt,
        vm,
        mem,
        io_bus,
        mmio_bus,
        reflections,
        seccomp: config.seccomp,
    })
}

#[cfg(test)]
mod tests {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    use vmm_sys_util::tempdir::TempDir;

    use super::*;
    use crate::config::{FsDeviceConfig, VmmConfig};

    fn config(fs: Vec<FsDeviceConfig>) -> VmConfig {
        VmmConfig {
            kernel: Some("/boot/vmlinux".into()),
            mem_mib: Some(64),
            fs,
            ..Default::default()
        }
        .finish()
        .unwrap()
    }

    #[test]
    fn an_inherited_descriptor_must_be_open_and_kvm() {
        use std::os::fd::IntoRawFd;
        let not_kvm = File::open("/dev/null").unwrap().into_raw_fd();
        let Err(err) = open_kvm(Some(not_kvm)) else {
            panic!("/dev/null taken for KVM");
        };
        assert!(err.to_string().contains("not /dev/kvm"), "{err}");
        let closed = File::open("/dev/null").unwrap().into_raw_fd();
        // SAFETY: ours, closed once.
        unsafe { libc::close(closed) };
        let Err(err) = open_kvm(Some(closed)) else {
            panic!("a closed descriptor taken for KVM");
        };
        assert!(
            err.to_string().starts_with(&format!("kvm_fd {closed}: ")),
            "{err}"
        );
    }

    #[test]
    fn guest_memory_is_anonymous_without_fs_devices() {
        let mem = create_guest_memory(&config(Vec::new())).unwrap();
        assert!(mem.iter().all(|r| r.file_offset().is_none()));
    }

    #[test]
    fn guest_memory_is_one_shared_memfd_with_fs_devices() {
        let dir = TempDir::new().unwrap();
        let fs = FsDeviceConfig {
            socket: dir.as_path().join("fs.sock"),
            tag: "share".to_string(),
            request_queues: 1,
            queue_size: 128,
        };
        let config = config(vec![fs]);
        let mem = create_guest_memory(&config).unwrap();
        let total: u64 = mem.iter().map(|r| r.len()).sum();
        assert_eq!(total, config.mem_bytes());
        let file = mem.iter().next().unwrap().file_offset().unwrap();
        assert_eq!(file.file().metadata().unwrap().len(), total);
    }
}
