//! A sandbox: the isolated place where an agent runs containers for us.
//!
//! * [`Backend::Vm`] (the product): `rust-vm-vmm` boots the guest kernel with the agent as
//!   `/init`, the container rootfs as a virtio-blk disk and a vsock device whose host side is a
//!   Unix socket in the state directory.
//! * [`Backend::Namespaces`] (tests and debugging only, no VM): the same agent binary runs on the
//!   host as PID 1 of fresh mount/PID/IPC/UTS namespaces, listening on a Unix socket.
//!
//! Everything above the transport (the protocol client, create/start/exec/stdio) is the same
//! code for both. A sandbox owns its state directory: [`Sandbox::shutdown`] (or drop) stops the
//! VMM or agent and removes the directory with the image, sockets and logs in it. The VMM or agent
//! is started with a parent-death signal, so it cannot outlive the process that started it.

mod namespaces;
pub mod process;
pub mod share;
pub mod slots;
mod vm;

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use rust_vm_protocol::Address;
use rust_vm_protocol::{Client, ClientError, RootfsSource, StreamKind, VersionInfo};
use vmm_config::CpuTemplate;

use crate::host_cgroup::{self, HostCgroup, HostCgroupError, Limits};
use crate::network::forward::{Dial, LoopbackForwarder};
use crate::network::{self, NetworkError, PodNetwork};
use crate::rootfs::{self, ImageError, ImageOptions};
pub use crate::settings::Backend;
use crate::settings::{GuestRoot, LogLevel, RootfsMode, VirtiofsCache};
use crate::{error_chain, Chain};
use share::{Share, ShareError, ShareOptions};
use slots::{DiskSlots, SlotError};

/// The vsock port the agent listens on in the guest.
pub const AGENT_VSOCK_PORT: u32 = rust_vm_protocol::DEFAULT_VSOCK_PORT;
/// The guest's vsock context id (3 is the first id available to guests).
pub const GUEST_CID: u32 = vmm_config::MIN_GUEST_CID;

/// How many lines of the guest console (or agent log) an error quotes.
pub const LOG_TAIL_LINES: usize = 40;
/// How much of the end of a log is read for its tail.
pub const LOG_TAIL_BYTES: u64 = 64 * 1024;
/// How long the agent may take to remove its containers and sync before it answers `shutdown`
/// (a pod's removal took about a second where guest ring 0 is emulated).
const SHUTDOWN_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest Unix socket path the kernel accepts (`sun_path` minus the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// Room a socket path needs for the VMM's `<socket>_<port>` names of guest-initiated
/// connections (the VMM makes them from the path it is given: a jailed VMM's is `/vsock.sock`).
const VSOCK_SUFFIX_ROOM: usize = 11;

/// Everything needed to start one sandbox. [`crate::RuntimeConfig::sandbox_config`] fills it
/// from `/etc/rust-vm/config.toml`.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub backend: Backend,
    /// Names the sandbox in logs and errors.
    pub id: String,
    /// Created by [`Sandbox::start`] (it must not exist yet) and removed by shutdown: holds the
    /// agent socket, the rootfs image and the console log.
    pub state_dir: PathBuf,
    /// `vm`: guest kernel.
    pub kernel: PathBuf,
    /// `vm`: where the guest's root (the agent as `/init`) comes from.
    pub guest_root: GuestRoot,
    /// `vm`: the read-only guest root image (`guest_root = image`).
    pub guest_image: PathBuf,
    /// `vm`: initramfs with the agent as `/init` (`guest_root = initramfs`).
    pub initramfs: PathBuf,
    /// `vm`: the `rust-vm-vmm` binary.
    pub vmm_path: PathBuf,
    /// `namespaces`: the `rust-vm-agent` binary.
    pub agent_path: PathBuf,
    pub vcpus: u32,
    pub mem_mib: u64,
    pub cpu_template: CpuTemplate,
    /// `vm`: the host runs guest ring 0 through KVM's instruction emulator (detected or asked
    /// for, see [`crate::host`]): the guest kernel gets [`crate::host::EMULATING_HOST_CMDLINE`].
    pub emulating_host: bool,
    /// How long the agent may take to answer after the VMM (or agent) is started, and to
    /// answer any one call but `wait` (a silent guest cannot hold its caller for good).
    pub agent_timeout: Duration,
    pub log_level: LogLevel,
    /// A bundle rootfs directory to give the first container. With `rootfs_mode = block`, `vm`
    /// builds an ext4 image of it and attaches it as virtio-blk `/dev/vda` (devices cannot be
    /// added to a running VM); through the share it needs nothing at start.
    pub rootfs: Option<PathBuf>,
    /// `vm`: how containers' root file systems reach the guest.
    pub rootfs_mode: RootfsMode,
    /// `vm`: the virtiofsd binary serving the pod's share.
    pub virtiofsd: PathBuf,
    /// `vm`: virtiofsd's cache mode.
    pub virtiofs_cache: VirtiofsCache,
    /// `vm`: virtiofsd's thread pool size (0: none).
    pub virtiofs_threads: usize,
    /// Where to append the guest console (or agent log) when the sandbox ends; it is otherwise
    /// deleted with the state directory.
    pub console_log: Option<PathBuf>,
    /// Run the VMM and virtiofsd (`namespaces`: the agent) in a host cgroup of the sandbox's own
    /// ([`crate::host_cgroup`]).
    pub host_cgroup: bool,
    /// `vm`: start the VMM in its jail ([`crate::jail`]) with ids from `jail_id_base` up.
    pub jail: bool,
    pub jail_id_base: u32,
    /// `vm`: extra guest kernel command-line words (see `RuntimeConfig::kernel_args`).
    pub kernel_args: String,
    /// `vm`: spare virtio-blk disks attached at boot for containers that join the sandbox later
    /// (a pod's); 0 for a sandbox of one container. See [`slots`].
    pub disk_slots: usize,
    /// `vm`: the size of each slot, in MiB: the most a later container's rootfs image may take.
    pub disk_slot_mib: u64,
    /// `vm`: the pod's network namespace (the first container's spec names it by path; see
    /// [`crate::network`]). The VMM runs in it with a virtio-net device over a tap joined to its
    /// interface. `None`: the VM has loopback only.
    pub network: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid sandbox id {0:?}: use 1 to 128 characters from [A-Za-z0-9_.-], not starting with '.'")]
    InvalidId(String),
    #[error("sandbox state directory {0} already exists (is sandbox id in use?)")]
    StateDirInUse(PathBuf),
    #[error("socket path {path} is {len} bytes, more than Unix sockets allow ({max}); use a shorter state directory (--root)")]
    SocketPathTooLong {
        path: PathBuf,
        len: usize,
        max: usize,
    },
    #[error("{what}: {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} not found at {path}: {hint}")]
    MissingFile {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    #[error("guest image {0} is neither ext4 nor erofs: rebuild it with rootfs/build-guest-image.sh or set `guest_image` in /etc/rust-vm/config.toml")]
    BadGuestImage(PathBuf),
    #[error("cannot start {program}")]
    Spawn { program: PathBuf, source: io::Error },
    #[error("the VMM's jail")]
    Jail(#[source] crate::jail::JailError),
    #[error("cannot start {program} in its jail: {step}")]
    EnterJail {
        program: PathBuf,
        step: String,
        source: io::Error,
    },
    #[error("the sandbox's host cgroup")]
    HostCgroup(#[from] HostCgroupError),
    #[error("rootfs image")]
    Rootfs(#[from] ImageError),
    #[error("{what} (pid {pid}) exited ({status}) before the agent answered\n{logs}")]
    EarlyExit {
        what: &'static str,
        pid: u32,
        status: String,
        logs: LogTails,
    },
    #[error("the agent did not answer on {address} within {timeout:?} (last attempt: {last_error})\n{logs}")]
    AgentTimeout {
        address: String,
        timeout: Duration,
        last_error: String,
        logs: LogTails,
    },
    #[error("agent")]
    Agent(#[from] ClientError),
    #[error("{what} (pid {pid}) exited ({status})\n{logs}")]
    Exited {
        what: &'static str,
        pid: u32,
        status: String,
        logs: LogTails,
    },
    #[error("no rootfs for {0} in this sandbox: the vm back-end attaches disks at start only, and this sandbox has no pod disk slots (`pod_disk_slots`; a pod's sandbox gets them)")]
    RootfsNotAttached(PathBuf),
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error("the VMM configuration")]
    VmmConfig(#[source] vmm_config::ConfigError),
    #[error("the pod's virtio-fs share")]
    Share(#[from] ShareError),
    #[error("the pod's network")]
    Network(#[from] NetworkError),
    #[error("configuring the pod's network in the guest")]
    ConfigureNetwork(#[source] ClientError),
}

/// The last lines of a log file, printed with a header naming the file.
#[derive(Debug, Clone)]
pub struct LogTail {
    pub path: PathBuf,
    pub lines: Vec<String>,
}

impl LogTail {
    /// The last `max_lines` lines, read from at most the last [`LOG_TAIL_BYTES`] of the file (a
    /// guest writes its console as it likes: the file may be huge).
    pub fn read(path: &Path, max_lines: usize) -> LogTail {
        let text = read_tail(path, LOG_TAIL_BYTES)
            .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(max_lines);
        LogTail {
            path: path.to_path_buf(),
            lines: all[start..].iter().map(|l| l.to_string()).collect(),
        }
    }
}

/// The tails of the sandbox's logs (VMM log, then guest console), for errors.
#[derive(Debug, Clone)]
pub struct LogTails(pub Vec<LogTail>);

impl LogTails {
    /// The guest console (or agent log) tail.
    pub fn console(&self) -> Option<&LogTail> {
        self.0.last()
    }
}

impl fmt::Display for LogTails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<&LogTail> = self.0.iter().filter(|t| !t.lines.is_empty()).collect();
        if shown.is_empty() {
            return match self.0.last() {
                Some(t) => t.fmt(f),
                None => Ok(()),
            };
        }
        for (i, tail) in shown.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            tail.fmt(f)?;
        }
        Ok(())
    }
}

impl fmt::Display for LogTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lines.is_empty() {
            return write!(f, "--- {} is empty ---", self.path.display());
        }
        writeln!(
            f,
            "--- last {} lines of {} ---",
            self.lines.len(),
            self.path.display()
        )?;
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        write!(f, "--- end of log ---")
    }
}

/// The files of a sandbox's state directory.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub dir: PathBuf,
    /// `vm`: what the VMM reads and writes of the sandbox's own (its jail's root when jailed,
    /// [`crate::jail`]): the vsock socket, the console, the disks, its configuration and
    /// virtiofsd's socket.
    pub vm_dir: PathBuf,
    /// `namespaces`: the agent's socket. `vm`: the vsock device's host socket.
    pub socket: PathBuf,
    /// `vm`: the guest serial console. `namespaces`: the agent's stderr.
    pub console: PathBuf,
    /// `vm`: the container rootfs image.
    pub image: PathBuf,
    /// `vm`: the VMM's JSON configuration.
    pub vmm_config: PathBuf,
    /// `vm`: the VMM's own stdout and stderr.
    pub vmm_log: PathBuf,
    /// `vm`: virtiofsd's socket and log.
    pub share: share::Layout,
}

/// The VMM's directory in a sandbox's state directory ([`Paths::vm_dir`]).
pub const VM_DIR: &str = "vm";

impl Paths {
    pub(crate) fn new(dir: &Path, backend: Backend) -> Paths {
        let vm_dir = dir.join(VM_DIR);
        let (socket, console) = match backend {
            Backend::Vm => (vm_dir.join("vsock.sock"), vm_dir.join("console.log")),
            Backend::Namespaces => (dir.join("agent.sock"), dir.join("console.log")),
        };
        Paths {
            dir: dir.to_path_buf(),
            socket,
            console,
            image: vm_dir.join("rootfs.ext4"),
            vmm_config: vm_dir.join("vmm.json"),
            vmm_log: dir.join("vmm.log"),
            share: share::Layout::new(dir, &vm_dir),
            vm_dir,
        }
    }
}

/// A running sandbox with an agent that answered.
pub struct Sandbox {
    config: SandboxConfig,
    paths: Paths,
    address: Address,
    child: Option<Child>,
    /// The host pid of the agent (`namespaces`) or the VMM (`vm`; jailed, its waiter, which exits
    /// with it).
    pid: u32,
    client: Option<Client>,
    agent: Option<VersionInfo>,
    rootfs_dir: Option<PathBuf>,
    /// `vm`: the pod disk slots and which rootfs each holds.
    slots: Mutex<DiskSlots>,
    /// `vm`: the pod's virtio-fs share and its virtiofsd.
    share: Option<Share>,
    /// `vm`: the pod's network namespace joined to the VM's tap.
    network: Option<PodNetwork>,
    /// `vm` with a pod network: connections to the namespace's loopback carried into the VM
    /// (CRI PortForward).
    port_forward: Option<LoopbackForwarder>,
    host_cgroup: Option<HostCgroup>,
    finished: bool,
}

pub fn validate_id(id: &str) -> Result<(), SandboxError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(SandboxError::InvalidId(id.to_string()))
    }
}

impl SandboxConfig {
    /// The agent's `--step-timeout-secs`: the host's own bound on an answer, in whole seconds
    /// (at least 1), so that the agent gives up on a step no later than the host gives up on it.
    pub fn agent_step_timeout_secs(&self) -> u64 {
        self.agent_timeout.as_secs().max(1)
    }

    /// What the sandbox takes from the container it starts with: its rootfs directory, and
    /// (`vm`) the network namespace its spec names by path as the pod's network. A spec with
    /// no network namespace (host networking) gets the VM's own, loopback only: a VM cannot share
    /// the host's network stack.
    pub fn first_container(&mut self, rootfs: &Path, spec: &oci_spec::runtime::Spec) {
        self.rootfs = Some(rootfs.to_path_buf());
        self.network = match self.backend {
            Backend::Vm => network::namespace_path(spec),
            Backend::Namespaces => None,
        };
        if self.network.is_none() && self.backend == Backend::Vm && !has_network_namespace(spec) {
            log::info!(
                "sandbox {}: the spec asks for the host's network; the VM has loopback only",
                self.id
            );
        }
    }

    /// `vm`: whether the first container's rootfs is the boot disk (`rootfs_mode = block`).
    pub fn boot_disk(&self) -> bool {
        self.rootfs.is_some() && self.rootfs_mode == RootfsMode::Block
    }

    /// `vm`: the disks attached before the containers' ones (the guest image, first).
    pub fn guest_disks(&self) -> usize {
        usize::from(self.guest_root == GuestRoot::Image)
    }
}

impl Sandbox {
    /// Starts the sandbox and waits (up to `agent_timeout`) for its agent to answer.
    ///
    /// Call it from a thread that lives as long as the sandbox (the main thread, or a dedicated
    /// one): the VMM or agent is started with `PR_SET_PDEATHSIG`, which the kernel fires when
    /// the *thread* that spawned it exits, not only when the process does.
    pub fn start(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        validate_id(&config.id)?;
        let paths = Paths::new(&config.state_dir, config.backend);
        check_socket_path(&paths.socket, config.backend, config.jail)?;
        let slots = match config.backend {
            Backend::Vm => DiskSlots::new(
                &paths.vm_dir,
                config.disk_slots,
                config.disk_slot_mib,
                config.guest_disks() + usize::from(config.boot_disk()),
            ),
            Backend::Namespaces => DiskSlots::new(&paths.dir, 0, 0, 0),
        };
        match config.backend {
            Backend::Vm => vm::check_inputs(&config, &paths, &slots)?,
            Backend::Namespaces => namespaces::check_inputs(&config)?,
        }
        if let Some(parent) = paths.dir.parent() {
            fs::create_dir_all(parent).map_err(|source| SandboxError::Io {
                what: "creating the state directory's parent",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        // Only root may reach the agent's socket: it controls every container in the sandbox.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&paths.dir)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::AlreadyExists {
                    SandboxError::StateDirInUse(paths.dir.clone())
                } else {
                    SandboxError::Io {
                        what: "creating the state directory",
                        path: paths.dir.clone(),
                        source,
                    }
                }
            })?;
        let address = match config.backend {
            Backend::Vm => Address::VsockUds {
                path: paths.socket.clone(),
                port: AGENT_VSOCK_PORT,
            },
            Backend::Namespaces => Address::Unix(paths.socket.clone()),
        };
        // From here on, dropping `sandbox` undoes everything.
        let mut sandbox = Sandbox {
            slots: Mutex::new(slots),
            rootfs_dir: config.rootfs.clone(),
            config,
            paths,
            address,
            child: None,
            pid: 0,
            client: None,
            agent: None,
            share: None,
            network: None,
            port_forward: None,
            host_cgroup: None,
            finished: false,
        };
        let cgroup_procs = if sandbox.config.host_cgroup {
            let name = host_cgroup::name(&sandbox.config.id, &sandbox.config.state_dir);
            let limits = Limits::for_vm(sandbox.config.vcpus, sandbox.config.mem_mib);
            let cgroup = HostCgroup::create(Path::new(host_cgroup::CGROUP_ROOT), &name, limits)?;
            log::info!(
                "sandbox {}: host cgroup {name} ({} MiB, {} CPU(s), {} tasks)",
                sandbox.config.id,
                limits.memory_bytes >> 20,
                limits.cpu_quota_us / 100_000,
                limits.pids
            );
            let procs = cgroup.procs_files();
            sandbox.host_cgroup = Some(cgroup);
            procs
        } else {
            Vec::new()
        };
        let (child, pid) = match sandbox.config.backend {
            Backend::Vm => {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&sandbox.paths.vm_dir)
                    .map_err(|source| SandboxError::Io {
                        what: "creating the VMM's directory",
                        path: sandbox.paths.vm_dir.clone(),
                        source,
                    })?;
                sandbox.share = Some(Share::start(
                    &sandbox.config.id,
                    sandbox.paths.share.clone(),
                    &ShareOptions {
                        virtiofsd: sandbox.config.virtiofsd.clone(),
                        cache: sandbox.config.virtiofs_cache,
                        thread_pool_size: sandbox.config.virtiofs_threads,
                        log_level: sandbox.config.log_level,
                        cgroup_procs: cgroup_procs.clone(),
                    },
                )?);
                if let Some(path) = &sandbox.config.network {
                    match PodNetwork::connect(path)? {
                        Some(network) => {
                            log::info!(
                        "sandbox {}: network namespace {} joined to tap {} (guest NIC {}, MTU {})",
                        sandbox.config.id,
                        path.display(),
                        network::TAP_NAME,
                        network.mac(),
                        network.mtu()
                    );
                            sandbox.network = Some(network);
                        }
                        None => log::info!(
                            "sandbox {}: network namespace {} has loopback only; so has the VM",
                            sandbox.config.id,
                            path.display()
                        ),
                    }
                }
                let slots = sandbox.slots.get_mut().unwrap_or_else(|e| e.into_inner());
                vm::launch(
                    &sandbox.config,
                    &sandbox.paths,
                    slots,
                    sandbox.network.as_ref(),
                    cgroup_procs,
                )?
            }
            Backend::Namespaces => {
                namespaces::launch(&sandbox.config, &sandbox.paths, cgroup_procs)?
            }
        };
        // The agent's time starts with the VMM (or agent) process, not with the image build.
        let started = Instant::now();
        sandbox.child = Some(child);
        sandbox.pid = pid;
        log::info!(
            "sandbox {}: {} started (pid {pid}), waiting for the agent on {}",
            sandbox.config.id,
            sandbox.what(),
            sandbox.address
        );
        let deadline = started + sandbox.config.agent_timeout;
        let info = sandbox.wait_for_agent(deadline)?;
        log::info!(
            "sandbox {}: agent {} ({:?} mode, protocol {}) answered after {:?}",
            sandbox.config.id,
            info.agent_version,
            info.mode,
            info.protocol,
            started.elapsed()
        );
        let mut client = Client::connect_address(sandbox.address.clone())?;
        client.set_timeout(Some(sandbox.config.agent_timeout));
        if let Some(network) = &sandbox.network {
            client
                .configure_network(network.guest_config().clone())
                .map_err(SandboxError::ConfigureNetwork)?;
            sandbox.port_forward = start_port_forward(
                &sandbox.config.id,
                network,
                &sandbox.address,
                sandbox.config.agent_timeout,
            );
        }
        sandbox.client = Some(client);
        sandbox.agent = Some(info);
        Ok(sandbox)
    }

    fn what(&self) -> &'static str {
        match self.config.backend {
            Backend::Vm => "VMM",
            Backend::Namespaces => "agent",
        }
    }

    fn wait_for_agent(&mut self, deadline: Instant) -> Result<VersionInfo, SandboxError> {
        let mut last_error = String::from("no attempt made");
        // A host agent listens within milliseconds, a guest within seconds: poll fast at first.
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(share) = self.share.as_mut() {
                let pid = share.virtiofsd_pid().unwrap_or(0);
                if let Some(status) = share.virtiofsd_exited() {
                    return Err(SandboxError::EarlyExit {
                        what: "virtiofsd",
                        pid,
                        status: status.to_string(),
                        logs: self.log_tails(),
                    });
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(SandboxError::EarlyExit {
                        what: self.what(),
                        pid: self.pid,
                        status: status.to_string(),
                        logs: self.log_tails(),
                    });
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(SandboxError::AgentTimeout {
                    address: self.address.to_string(),
                    timeout: self.config.agent_timeout,
                    last_error,
                    logs: self.log_tails(),
                });
            }
            let budget = (deadline - now).max(Duration::from_millis(50));
            match probe_agent(&self.address, budget) {
                Ok(info) => return Ok(info),
                Err(e) => last_error = e,
            }
            std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// `Err` with the exit status and the log tails once the VMM (or agent) has exited: what to
    /// report when an agent call fails because the connection closed.
    pub fn check_alive(&mut self) -> Result<(), SandboxError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        // A dying VMM may need a moment after the guest's last words.
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    return Err(SandboxError::Exited {
                        what: self.what(),
                        pid: self.pid,
                        status: status.to_string(),
                        logs: self.log_tails(),
                    })
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => return Ok(()),
            }
        }
    }

    fn log_tails(&self) -> LogTails {
        let mut tails = Vec::new();
        if self.config.backend == Backend::Vm {
            tails.push(LogTail::read(&self.paths.share.log, LOG_TAIL_LINES));
            tails.push(LogTail::read(&self.paths.vmm_log, LOG_TAIL_LINES));
        }
        tails.push(LogTail::read(&self.paths.console, LOG_TAIL_LINES));
        LogTails(tails)
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    pub fn backend(&self) -> Backend {
        self.config.backend
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Host pid of the VMM (`vm`) or of the agent (`namespaces`).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Where to reach the agent; other processes may connect to it with
    /// `rust_vm_protocol::Client::connect(&address.to_string())` while the sandbox lives.
    pub fn agent_address(&self) -> &Address {
        &self.address
    }

    /// What the agent said about itself when it answered.
    pub fn agent_info(&self) -> Option<&VersionInfo> {
        self.agent.as_ref()
    }

    /// The control connection to the agent.
    pub fn client(&self) -> &Client {
        // Always Some between start() and shutdown(); shutdown takes self.
        self.client
            .as_ref()
            .expect("a started sandbox always has a client")
    }

    /// Opens a stdio stream of a process (see `rust_vm_protocol::Client::attach`).
    pub fn connect_stream(
        &self,
        container_id: &str,
        exec_id: Option<&str>,
        stream: StreamKind,
    ) -> Result<UnixStream, SandboxError> {
        Ok(rust_vm_protocol::attach(
            &self.address,
            container_id,
            exec_id,
            stream,
        )?)
    }

    /// The guest console log (`vm`) or agent log (`namespaces`) while the sandbox lives.
    pub fn console_log(&self) -> &Path {
        &self.paths.console
    }

    pub fn state_dir(&self) -> &Path {
        &self.paths.dir
    }

    /// Where the container whose bundle rootfs is `bundle_rootfs` finds its root when it does not
    /// come through the share, in the agent's terms: the host directory itself (`namespaces`) or
    /// the virtio-blk disk built from it (`vm` with `rootfs_mode = block`: the boot disk for the
    /// rootfs given in [`SandboxConfig::rootfs`], otherwise a pod disk slot that its image is
    /// written into now; [`Sandbox::release_rootfs`] frees it).
    pub fn rootfs_source(&self, bundle_rootfs: &Path) -> Result<RootfsSource, SandboxError> {
        let canonical = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        match self.config.backend {
            Backend::Namespaces => {
                let path = fs::canonicalize(bundle_rootfs).map_err(|source| SandboxError::Io {
                    what: "rootfs directory",
                    path: bundle_rootfs.to_path_buf(),
                    source,
                })?;
                Ok(RootfsSource::Directory { path })
            }
            Backend::Vm => match self.rootfs_dir.as_ref().filter(|_| self.config.boot_disk()) {
                Some(dir) if canonical(dir) == canonical(bundle_rootfs) => {
                    Ok(RootfsSource::BlockDevice {
                        device: vm::boot_disk_device(&self.config),
                        fstype: "ext4".to_string(),
                        readonly: false,
                    })
                }
                _ => {
                    let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
                    if slots.slots().is_empty() {
                        return Err(SandboxError::RootfsNotAttached(bundle_rootfs.to_path_buf()));
                    }
                    let slot = match slots.find(bundle_rootfs) {
                        Some(slot) => slot.clone(),
                        None => {
                            let started = Instant::now();
                            let slot = slots.fill(bundle_rootfs)?;
                            log::info!(
                                "sandbox {}: rootfs {} written into disk slot {} ({}) in {:?}",
                                self.config.id,
                                bundle_rootfs.display(),
                                slot.index,
                                slot.guest_device.display(),
                                started.elapsed()
                            );
                            slot
                        }
                    };
                    Ok(RootfsSource::BlockDevice {
                        device: slot.guest_device,
                        fstype: "ext4".to_string(),
                        readonly: false,
                    })
                }
            },
        }
    }

    /// What the agent needs to create container `id` from `spec`: where its root is
    /// ([`Sandbox::rootfs_source`], or on `vm` with `rootfs_mode = virtio-fs` the share), and the
    /// spec with every bind mount's host source replaced by its copy in the share (`vm`; the
    /// `namespaces` agent sees host paths as they are). [`Sandbox::release_container`] undoes it.
    pub fn prepare_container(
        &self,
        id: &str,
        bundle: &Path,
        bundle_rootfs: &Path,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(RootfsSource, oci_spec::runtime::Spec), SandboxError> {
        let Some(share) = &self.share else {
            return Ok((self.rootfs_source(bundle_rootfs)?, spec.clone()));
        };
        validate_id(id)?;
        let (spec, binds) = share::plan(&network::spec_for_guest(spec), id, bundle);
        let (rootfs, through_share) = match self.config.rootfs_mode {
            RootfsMode::VirtioFs => (
                RootfsSource::Directory {
                    path: share::guest_rootfs(id),
                },
                Some(bundle_rootfs),
            ),
            RootfsMode::Block => (self.rootfs_source(bundle_rootfs)?, None),
        };
        let started = Instant::now();
        if let Err(err) = share.add_container(id, through_share, &binds) {
            if through_share.is_none() {
                self.release_rootfs(bundle_rootfs)?;
            }
            return Err(err.into());
        }
        log::info!(
            "sandbox {}: container {id} in the share ({}{} bind mount(s)) in {:?}",
            self.config.id,
            if through_share.is_some() {
                "rootfs, "
            } else {
                ""
            },
            binds.len(),
            started.elapsed()
        );
        Ok((rootfs, spec))
    }

    /// Undoes [`Sandbox::prepare_container`] once the agent removed the container: its part of
    /// the share, and its pod disk slot.
    pub fn release_container(&self, id: &str, bundle_rootfs: &Path) -> Result<(), SandboxError> {
        if let Some(share) = &self.share {
            share.remove_container(id)?;
        }
        self.release_rootfs(bundle_rootfs)
    }

    /// Frees the pod disk slot that holds `bundle_rootfs` (after the agent removed the
    /// container, which unmounts it), so a later container can use it. Nothing to do for the
    /// boot disk or the `namespaces` back-end.
    pub fn release_rootfs(&self, bundle_rootfs: &Path) -> Result<(), SandboxError> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(index) = slots.release(bundle_rootfs)? {
            log::info!(
                "sandbox {}: disk slot {index} free again (was {})",
                self.config.id,
                bundle_rootfs.display()
            );
        }
        Ok(())
    }

    /// Asks the agent to shut the sandbox down, waits briefly, then kills what is left and
    /// removes the state directory (image, sockets, console log).
    pub fn shutdown(mut self) -> Result<(), SandboxError> {
        self.finish(true)
    }

    /// Kills the sandbox without asking the agent, and removes the state directory.
    pub fn kill(mut self) -> Result<(), SandboxError> {
        self.finish(false)
    }

    fn finish(&mut self, graceful: bool) -> Result<(), SandboxError> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        if let Some(mut forwarder) = self.port_forward.take() {
            if let Err(e) = forwarder.stop() {
                log::warn!("sandbox {}: {}", self.config.id, Chain(&e));
            }
        }
        if let Some(child) = self.child.as_mut() {
            // The agent answers `shutdown` once its containers are removed and the guest's
            // file systems synced: the VM has nothing left to lose, and the guest kernel's own
            // power-off (seconds where guest ring 0 is emulated) need not be waited for.
            // Without an answer the guest may still be powering off: give it a moment.
            let answered = graceful
                && self.client.as_mut().is_some_and(|client| {
                    client
                        .set_timeout(Some(self.config.agent_timeout.min(SHUTDOWN_ANSWER_TIMEOUT)));
                    client
                        .shutdown()
                        .map_err(|e| {
                            log::debug!(
                                "sandbox {}: shutdown request: {}",
                                self.config.id,
                                Chain(&e)
                            )
                        })
                        .is_ok()
                });
            if graceful && !answered {
                wait_with_deadline(child, Duration::from_secs(3));
            }
            process::kill_and_reap(child);
        }
        self.client = None;
        // After the VMM: its back-end goes last, and the share's mounts with it.
        if let Some(mut share) = self.share.take() {
            share.shutdown();
        }
        if let Some(mut network) = self.network.take() {
            if let Err(e) = network.disconnect() {
                log::warn!("sandbox {}: {}", self.config.id, Chain(&e));
            }
        }
        // Its processes are gone now (killed and reaped above).
        if let Some(cgroup) = self.host_cgroup.take() {
            if let Err(e) = cgroup.remove() {
                log::warn!("sandbox {}: {}", self.config.id, Chain(&e));
            }
        }
        if let Some(dest) = &self.config.console_log {
            let mut logs = vec![(&self.paths.console, "console")];
            if self.config.backend == Backend::Vm {
                logs.push((&self.paths.vmm_log, "VMM log"));
                logs.push((&self.paths.share.log, "virtiofsd log"));
            }
            for (log, what) in logs {
                if let Err(e) = append_log(log, what, dest, &self.config.id) {
                    log::warn!(
                        "sandbox {}: keeping the {what} in {}: {e}",
                        self.config.id,
                        dest.display()
                    );
                }
            }
        }
        fs::remove_dir_all(&self.paths.dir).or_else(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(SandboxError::Io {
                    what: "removing the state directory",
                    path: self.paths.dir.clone(),
                    source: e,
                })
            }
        })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Err(e) = self.finish(false) {
            log::warn!("sandbox {}: cleanup: {}", self.config.id, Chain(&e));
        }
    }
}

/// Starts forwarding connections to the pod namespace's loopback into the VM (CRI
/// PortForward, see [`network::forward`]). Without it the pod still runs: a failure (no
/// iptables, say) is logged, and PortForward to the pod then finds nothing listening.
fn start_port_forward(
    id: &str,
    network: &PodNetwork,
    address: &Address,
    timeout: Duration,
) -> Option<LoopbackForwarder> {
    let address = address.clone();
    let dial: Dial = Arc::new(move |port| {
        rust_vm_protocol::port_forward_within(&address, port, Some(timeout))
            .map_err(io::Error::other)
    });
    match LoopbackForwarder::start(network.namespace(), network.namespace_path(), dial) {
        Ok(forwarder) => {
            log::info!(
                "sandbox {id}: TCP to the loopback of {} is forwarded into the VM (via port {})",
                network.namespace_path().display(),
                forwarder.port()
            );
            Some(forwarder)
        }
        Err(e) => {
            log::warn!("sandbox {id}: no port forwarding: {}", Chain(&e));
            None
        }
    }
}

fn has_network_namespace(spec: &oci_spec::runtime::Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|n| {
            n.iter()
                .any(|ns| ns.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
        })
}

/// One bounded attempt: connect (and vsock handshake), then ask the agent's version.
fn probe_agent(address: &Address, budget: Duration) -> Result<VersionInfo, String> {
    let stream = address
        .connect_within(budget)
        .map_err(|e| error_chain(&e))?;
    let mut client = Client::from_stream(stream).map_err(|e| error_chain(&e))?;
    client.set_timeout(Some(budget));
    client.version().map_err(|e| error_chain(&e))
}

fn wait_with_deadline(child: &mut Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
        }
    }
}

/// The last `max` bytes of a file; when that is not the whole file, from the first line start.
fn read_tail(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = fs::File::open(path)?;
    let start = file.metadata()?.len().saturating_sub(max);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.take(max).read_to_end(&mut tail)?;
    if start > 0 {
        let first_line = tail.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        tail.drain(..first_line);
    }
    Ok(tail)
}

fn last_byte(file: &mut fs::File) -> io::Result<Option<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    if file.metadata()?.len() == 0 {
        return Ok(None);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut byte = [0u8];
    file.read_exact(&mut byte)?;
    Ok(Some(byte[0]))
}

/// Appends the whole of `log` to `dest` between markers, streaming it (it may be large).
fn append_log(log: &Path, what: &str, dest: &Path, id: &str) -> io::Result<()> {
    use std::io::Write;
    let mut text = match fs::File::open(log) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dest)?;
    writeln!(out, "--- sandbox {id}: {what} ---")?;
    let copied = io::copy(&mut text, &mut out)?;
    if copied > 0 && last_byte(&mut text)? != Some(b'\n') {
        writeln!(out)?;
    }
    writeln!(out, "--- sandbox {id}: end of {what} ---")
}

/// The host's path of the agent's socket must fit `sun_path`; an unjailed VMM also names the
/// sockets of guest-initiated connections after it.
fn check_socket_path(socket: &Path, backend: Backend, jail: bool) -> Result<(), SandboxError> {
    let room = match backend {
        Backend::Vm if !jail => VSOCK_SUFFIX_ROOM,
        Backend::Vm | Backend::Namespaces => 0,
    };
    let len = socket.as_os_str().len();
    if len + room > MAX_SOCKET_PATH {
        return Err(SandboxError::SocketPathTooLong {
            path: socket.to_path_buf(),
            len,
            max: MAX_SOCKET_PATH - room,
        });
    }
    Ok(())
}

pub(crate) fn require_file(
    what: &'static str,
    path: &Path,
    hint: &'static str,
) -> Result<(), SandboxError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(SandboxError::MissingFile {
            what,
            path: path.to_path_buf(),
            hint,
        })
    }
}

pub(crate) fn build_rootfs_image(src: &Path, image: &Path) -> Result<(), SandboxError> {
    let started = Instant::now();
    let built = rootfs::build_ext4_image(src, image, &ImageOptions::default())?;
    log::info!(
        "rootfs image {} ({} MiB for {} MiB of content) built in {:?}",
        image.display(),
        built.size_bytes >> 20,
        built.content.bytes >> 20,
        started.elapsed()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_config(backend: Backend, id: &str, state_dir: &Path) -> SandboxConfig {
        let mut cfg = crate::RuntimeConfig::default().sandbox_config(id, state_dir);
        cfg.backend = backend;
        cfg
    }

    #[test]
    fn the_first_containers_network_namespace_is_the_pods_on_vm_only() {
        let spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"namespaces": [{"type": "network", "path": "/run/netns/cni-1"}]}
        }))
        .expect("spec");
        let mut vm = test_config(Backend::Vm, "n", Path::new("/run/n"));
        vm.first_container(Path::new("/b/rootfs"), &spec);
        assert_eq!(vm.rootfs.as_deref(), Some(Path::new("/b/rootfs")));
        assert_eq!(vm.network.as_deref(), Some(Path::new("/run/netns/cni-1")));
        // The namespaces back-end's agent joins the path itself, on the host.
        let mut ns = test_config(Backend::Namespaces, "n", Path::new("/run/n"));
        ns.first_container(Path::new("/b/rootfs"), &spec);
        assert_eq!(ns.network, None);
        // Host networking: no pod network, the VM keeps loopback only.
        let mut host = test_config(Backend::Vm, "n", Path::new("/run/n"));
        let host_network: oci_spec::runtime::Spec = serde_json::from_value(
            serde_json::json!({"ociVersion": "1.0.2", "linux": {"namespaces": [{"type": "pid"}]}}),
        )
        .expect("spec");
        host.first_container(Path::new("/b/rootfs"), &host_network);
        assert_eq!(host.network, None);
    }

    #[test]
    fn ids() {
        for ok in ["a", "abc-123_x.y", &"x".repeat(128)] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "..", &"x".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_agents_step_bound_is_the_agent_timeout_in_whole_seconds() {
        let mut cfg = test_config(Backend::Namespaces, "sb", Path::new("/nonexistent"));
        for (timeout, secs) in [
            (Duration::from_secs(600), 600),
            (Duration::from_millis(1500), 1),
        ] {
            cfg.agent_timeout = timeout;
            assert_eq!(cfg.agent_step_timeout_secs(), secs, "{timeout:?}");
        }
        cfg.agent_timeout = Duration::from_millis(200);
        assert_eq!(
            cfg.agent_step_timeout_secs(),
            1,
            "never 0 (the agent refuses it)"
        );
    }

    #[test]
    fn backend_names() {
        assert_eq!("vm".parse::<Backend>(), Ok(Backend::Vm));
        assert_eq!("namespaces".parse::<Backend>(), Ok(Backend::Namespaces));
        let err = "kvm".parse::<Backend>().unwrap_err();
        assert!(err.contains("kvm"));
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("console.log");
        let text: String = (1..=100).map(|i| format!("line {i}\r\n")).collect();
        fs::write(&log, text).expect("write");
        let tail = LogTail::read(&log, 3);
        assert_eq!(tail.lines, vec!["line 98", "line 99", "line 100"]);
        let shown = tail.to_string();
        assert!(shown.contains("console.log"), "{shown}");
        let missing = LogTail::read(&dir.path().join("none"), 3);
        assert!(missing.to_string().contains("is empty"));
    }

    #[test]
    fn the_tail_of_a_huge_log_reads_only_its_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("console.log");
        let line = "x".repeat(99) + "\n";
        let mut text = line.repeat(100_000); // 10 MB
        text.push_str("second last\nlast\n");
        fs::write(&log, &text).expect("write");
        let tail = LogTail::read(&log, 2);
        assert_eq!(tail.lines, vec!["second last", "last"]);
        let bytes = read_tail(&log, LOG_TAIL_BYTES).expect("tail");
        assert!(bytes.len() as u64 <= LOG_TAIL_BYTES);
        assert!(
            bytes.starts_with(line.as_bytes()),
            "starts at a line boundary"
        );

        let dest = dir.path().join("kept.log");
        append_log(&log, "console", &dest, "sb").expect("append");
        let kept = fs::read_to_string(&dest).expect("kept");
        assert!(kept.starts_with("--- sandbox sb: console ---\n"));
        assert!(kept.ends_with("last\n--- sandbox sb: end of console ---\n"));
        assert_eq!(
            kept.len(),
            text.len()
                + "--- sandbox sb: console ---\n".len()
                + "--- sandbox sb: end of console ---\n".len()
        );
    }

    #[test]
    fn long_socket_paths_are_refused() {
        let long = PathBuf::from(format!("/run/{}/vsock.sock", "x".repeat(100)));
        let err = check_socket_path(&long, Backend::Vm, true).unwrap_err();
        assert!(err.to_string().contains("--root"), "{err}");
        assert!(check_socket_path(
            Path::new("/run/rust-vm/a/agent.sock"),
            Backend::Namespaces,
            false
        )
        .is_ok());
        // podman's 64-character ids under /run/rust-vm: 99 bytes. The jailed VMM names its
        // `_<port>` sockets after `/vsock.sock`, so the host path needs no room for them.
        let podman = format!("/run/rust-vm/{}/sandbox/vm/vsock.sock", "e".repeat(64));
        assert_eq!(podman.len(), 99);
        assert!(check_socket_path(Path::new(&podman), Backend::Vm, true).is_ok());
        let err = check_socket_path(Path::new(&podman), Backend::Vm, false).unwrap_err();
        assert!(err.to_string().contains("(96)"), "{err}");
    }

    #[test]
    fn existing_state_dir_is_in_use_and_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("sb");
        fs::create_dir(&state).expect("mkdir");
        fs::write(state.join("keep"), b"x").expect("write");
        let mut cfg = test_config(Backend::Namespaces, "sb", &state);
        cfg.agent_path = PathBuf::from("/bin/true");
        let err = Sandbox::start(cfg).err().expect("must fail");
        assert!(matches!(err, SandboxError::StateDirInUse(_)), "{err}");
        assert!(state.join("keep").exists());
    }

    #[test]
    fn silent_agent_times_out_with_its_log_and_is_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("sb");
        let script = dir.path().join("mute-agent");
        fs::write(
            &script,
            "#!/bin/sh\necho 'mute agent: booting' >&2\nexec sleep 987.654\n",
        )
        .expect("write");
        fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let mut cfg = test_config(Backend::Namespaces, "sb", &state);
        cfg.agent_path = script;
        cfg.agent_timeout = Duration::from_secs(1);
        let started = Instant::now();
        match Sandbox::start(cfg) {
            Err(SandboxError::AgentTimeout { logs, timeout, .. }) => {
                assert_eq!(timeout, Duration::from_secs(1));
                assert!(started.elapsed() < Duration::from_secs(5));
                assert!(logs.to_string().contains("mute agent: booting"), "{logs}");
            }
            Err(SandboxError::Spawn { source, .. })
                if source.raw_os_error() == Some(libc::EPERM) =>
            {
                return; // not root: the namespaces back-end needs root
            }
            Err(other) => panic!("unexpected error: {other}"),
            Ok(_) => panic!("a mute agent cannot answer"),
        }
        assert!(!state.exists(), "state directory left behind");
        // The agent (a sleep with a telltale duration) is gone with its namespace.
        let telltale = b"sleep\0987.654\0";
        let deadline = Instant::now() + Duration::from_secs(3);
        while process::proc_statuses().iter().any(|(pid, status)| {
            !status.contains("State:\tZ")
                && fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == telltale)
        }) {
            assert!(
                Instant::now() < deadline,
                "the mute agent outlived its sandbox"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn agent_that_exits_is_reported_with_its_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("sb");
        let script = dir.path().join("fake-agent");
        fs::write(
            &script,
            "#!/bin/sh\necho 'fake agent: cannot start' >&2\nexit 7\n",
        )
        .expect("write");
        fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let mut cfg = test_config(Backend::Namespaces, "sb", &state);
        cfg.agent_path = script;
        cfg.agent_timeout = Duration::from_secs(10);
        match Sandbox::start(cfg) {
            Err(SandboxError::EarlyExit { logs, status, .. }) => {
                assert!(status.contains('7'), "{status}");
                assert!(logs.to_string().contains("fake agent: cannot start"));
            }
            Err(SandboxError::Spawn { source, .. })
                if source.raw_os_error() == Some(libc::EPERM) =>
            {
                // Not root: unshare is refused; the namespaces back-end needs root.
            }
            Err(other) => panic!("unexpected error: {other}"),
            Ok(_) => panic!("a fake agent cannot answer"),
        }
        assert!(!state.exists(), "state directory left behind");
    }
}
