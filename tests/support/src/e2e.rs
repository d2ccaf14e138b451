//! The one end-to-end driver, in Rust on the protocol crate: boots the real VMM, the guest
//! kernel and the real guest root (the read-only guest image, or the initramfs; the static agent
//! as `/init`) through `rust_vm_sandbox`, asks
//! the agent its version and pings it over vsock, runs a busybox container (its rootfs through the
//! pod's virtio-fs share, or with `rootfs_mode = block` from the boot disk), shuts the sandbox
//! down and waits for the VMM to go; meanwhile a watcher records when each milestone happened,
//! from the VMM process in /proc and the guest console. Before boot the driver can add files to
//! the container's rootfs, to measure with: a `/padding` file of [`E2e::rootfs_padding`] bytes
//! and [`E2e::rootfs_small_files`] 4 KiB files under `/small` ([`write_padding`],
//! [`write_small_files`]).
//!
//! Used by the `vm_e2e` test and the `vm_run` and `guest_fs` benchmarks (rust-vm-cli). Needs /dev/kvm, root and
//! the installed guest kernel and guest image or initramfs (scripts/setup.sh); on an instruction-emulating host
//! (PVM) the sandbox applies the workarounds it detects (docs/pvm-host-boot.md).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rust_vm_sandbox::config::{DEFAULT_GUEST_IMAGE, DEFAULT_INITRAMFS, DEFAULT_KERNEL};
use rust_vm_sandbox::protocol::{CreateContainer, StreamKind, VersionInfo};
use rust_vm_sandbox::{
    Backend, GuestRoot, LogLevel, RootfsMode, RuntimeConfig, Sandbox, VirtiofsCache,
};

use crate::{procs, spec_json, BusyboxBundle};

/// How often the watcher looks.
const POLL: Duration = Duration::from_millis(5);
const ID: &str = "e2e";

pub const VMM_STARTED: &str = "VMM process started";
pub const AGENT_ANSWERED: &str = "agent answered (sandbox started)";
pub const PINGED: &str = "agent pinged";
pub const CREATED: &str = "container created";
pub const STARTED: &str = "container started";
pub const OUTPUT_READ: &str = "container output read";
pub const EXITED: &str = "container exited";
pub const REMOVED: &str = "container removed";
pub const SHUT_DOWN: &str = "sandbox shut down";
pub const VMM_GONE: &str = "VMM process gone";

/// Guest console lines that mark a milestone.
const CONSOLE_MARKS: [(&str, &str); 5] = [
    ("kernel banner (console)", "Linux version"),
    ("initramfs unpacked (console)", "Freeing initrd memory"),
    ("guest image mounted (console)", "VFS: Mounted root"),
    ("/init started (console)", "Run /init as init process"),
    ("agent listening (console)", "listening on vsock"),
];

/// Every milestone, in the order they happen.
pub fn milestone_names() -> Vec<&'static str> {
    let mut names = vec![VMM_STARTED];
    names.extend(CONSOLE_MARKS.iter().map(|(name, _)| *name));
    names.extend([
        AGENT_ANSWERED,
        PINGED,
        CREATED,
        STARTED,
        OUTPUT_READ,
        EXITED,
        REMOVED,
        SHUT_DOWN,
        VMM_GONE,
    ]);
    names
}

/// Fails (never skips) when the host or the installed guest artifacts are missing.
pub fn require_vm_host() -> Result<()> {
    ensure!(
        Path::new("/dev/kvm").exists(),
        "/dev/kvm missing: the end-to-end run needs KVM (hardware or PVM)"
    );
    ensure!(
        Path::new(DEFAULT_KERNEL).is_file(),
        "{DEFAULT_KERNEL} missing: run guest-kernel/build.sh (or scripts/setup.sh)"
    );
    for (file, script) in [
        (DEFAULT_GUEST_IMAGE, "rootfs/build-guest-image.sh"),
        (DEFAULT_INITRAMFS, "rootfs/build-initramfs.sh"),
    ] {
        ensure!(
            Path::new(file).is_file(),
            "{file} missing: run {script} (or scripts/setup.sh)"
        );
    }
    Ok(())
}

/// What to run.
pub struct E2e {
    /// The busybox container's process.
    pub args: Vec<String>,
    pub vmm: PathBuf,
    pub kernel: PathBuf,
    pub guest_root: GuestRoot,
    pub guest_image: PathBuf,
    pub initramfs: PathBuf,
    pub log_level: LogLevel,
    pub rootfs_mode: RootfsMode,
    /// virtiofsd's cache mode and thread pool (the runtime's defaults unless set).
    pub virtiofs_cache: VirtiofsCache,
    pub virtiofs_threads: usize,
    /// Bytes of padding written into the container's rootfs as `/padding` (an image size, a
    /// file to read).
    pub rootfs_padding: u64,
    /// That many 4 KiB files written into the container's rootfs as `/small/d<i/100>/f<i>`
    /// (metadata and open rates to measure).
    pub rootfs_small_files: usize,
    /// Host files copied into the container's rootfs: (path in the rootfs, source).
    pub rootfs_files: Vec<(String, PathBuf)>,
    /// Changes to the container's spec ([`spec_json`] of `args`).
    pub edit_spec: fn(&mut serde_json::Value),
}

impl E2e {
    /// `args` in the VM, with the workspace's VMM and the installed kernel and guest image.
    pub fn new(args: &[&str]) -> E2e {
        E2e {
            args: args.iter().map(|a| a.to_string()).collect(),
            vmm: crate::vmm(),
            kernel: DEFAULT_KERNEL.into(),
            guest_root: GuestRoot::default(),
            guest_image: DEFAULT_GUEST_IMAGE.into(),
            initramfs: DEFAULT_INITRAMFS.into(),
            log_level: LogLevel::Info,
            rootfs_mode: RootfsMode::default(),
            virtiofs_cache: VirtiofsCache::default(),
            virtiofs_threads: rust_vm_sandbox::config::DEFAULT_VIRTIOFS_THREADS,
            rootfs_padding: 0,
            rootfs_small_files: 0,
            rootfs_files: Vec::new(),
            edit_spec: |_| {},
        }
    }
}

/// Writes `bytes` of padding (real blocks, not a hole: an image copy has to carry them) as
/// `root/padding`.
pub fn write_padding(root: &Path, bytes: u64) -> Result<()> {
    let padding = std::fs::File::create(root.join("padding"))?;
    let mut out = std::io::BufWriter::new(padding);
    std::io::copy(&mut std::io::repeat(0x5a).take(bytes), &mut out)?;
    std::io::Write::flush(&mut out)?;
    Ok(())
}

/// Writes `count` files of 4 KiB as `root/small/d<i/100>/f<i>`.
pub fn write_small_files(root: &Path, count: usize) -> Result<()> {
    let content = [0xa5u8; 4096];
    for i in 0..count {
        let dir = root.join("small").join(format!("d{}", i / 100));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("f{i}")), content)?;
    }
    Ok(())
}

/// What a run saw.
pub struct Report {
    /// The agent's answer to `version` when the sandbox started, and to a second `version`.
    pub agent: VersionInfo,
    pub agent_again: VersionInfo,
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    /// The guest console, kept after shutdown.
    pub console: String,
    pub vmm_pid: u32,
    /// The VMM process as the host saw it while the guest ran.
    pub vmm_confinement: procs::Confinement,
    /// The share's virtiofsd processes (its monitor and the one serving) likewise.
    pub virtiofsd_confinement: Vec<procs::Confinement>,
    /// The sandbox's state directory (shutdown removes it).
    pub state_dir: PathBuf,
    /// Time since `Sandbox::start` was called, per milestone seen.
    pub milestones: BTreeMap<&'static str, Duration>,
}

type Marks = Arc<Mutex<BTreeMap<&'static str, Duration>>>;

fn mark(marks: &Marks, what: &'static str, at: Duration) {
    marks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(what)
        .or_insert(at);
}

/// Watches the VMM process and the console until `done`.
fn watch(state_dir: PathBuf, t0: Instant, marks: Marks, done: Arc<AtomicBool>) {
    let console = state_dir.join("vm/console.log");
    let needle = state_dir.display().to_string();
    let mut vmm: Option<u32> = None;
    while !done.load(Ordering::Relaxed) {
        let now = t0.elapsed();
        match vmm {
            None => {
                if let Some(&pid) = procs::vmm_pids(&needle).first() {
                    vmm = Some(pid);
                    mark(&marks, VMM_STARTED, now);
                }
            }
            Some(pid) if !procs::alive(pid) => mark(&marks, VMM_GONE, now),
            Some(_) => {}
        }
        // The console goes with the state directory at shutdown; the files only grow before.
        if let Ok(text) = std::fs::read_to_string(&console) {
            for (what, line) in CONSOLE_MARKS {
                if text.contains(line) {
                    mark(&marks, what, now);
                }
            }
        }
        thread::sleep(POLL);
    }
}

/// Boots, runs, shuts down; an error carries the console.
pub fn run(e2e: &E2e) -> Result<Report> {
    require_vm_host()?;
    let work = tempfile::Builder::new().prefix("rust-vm-e2e-").tempdir()?;
    let args: Vec<&str> = e2e.args.iter().map(String::as_str).collect();
    let mut spec = spec_json(&args);
    (e2e.edit_spec)(&mut spec);
    let bundle = BusyboxBundle::with_spec("e2e", &spec);
    for (dest, src) in &e2e.rootfs_files {
        let dest = bundle.root().join(dest.trim_start_matches('/'));
        std::fs::copy(src, &dest)
            .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    }
    if e2e.rootfs_padding > 0 {
        write_padding(&bundle.root(), e2e.rootfs_padding)?;
    }
    if e2e.rootfs_small_files > 0 {
        write_small_files(&bundle.root(), e2e.rootfs_small_files)?;
    }
    let state_dir = work.path().join("sandbox");
    let kept_console = work.path().join("console.log");
    let mut cfg = RuntimeConfig::default().sandbox_config(ID, &state_dir);
    cfg.backend = Backend::Vm;
    cfg.vmm_path = e2e.vmm.clone();
    cfg.kernel = e2e.kernel.clone();
    cfg.guest_root = e2e.guest_root;
    cfg.guest_image = e2e.guest_image.clone();
    cfg.initramfs = e2e.initramfs.clone();
    cfg.log_level = e2e.log_level;
    cfg.rootfs_mode = e2e.rootfs_mode;
    cfg.virtiofs_cache = e2e.virtiofs_cache;
    cfg.virtiofs_threads = e2e.virtiofs_threads;
    cfg.rootfs = Some(bundle.root());
    cfg.console_log = Some(kept_console.clone());

    let marks: Marks = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let watcher = {
        let (state_dir, marks, done) = (state_dir.clone(), marks.clone(), done.clone());
        thread::spawn(move || watch(state_dir, t0, marks, done))
    };
    let result = drive(cfg, &bundle, &marks, t0);
    // The VMM's disappearance, if the watcher has not seen it yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    while result.is_ok() && !marks.lock().unwrap().contains_key(VMM_GONE) {
        if Instant::now() > deadline {
            break;
        }
        thread::sleep(POLL);
    }
    done.store(true, Ordering::Relaxed);
    watcher
        .join()
        .map_err(|_| anyhow::anyhow!("the watcher panicked"))?;
    let console = std::fs::read_to_string(&kept_console).unwrap_or_default();
    let mut report = result.with_context(|| format!("guest console:\n{console}"))?;
    report.console = console;
    report.state_dir = state_dir;
    report.milestones = marks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(report)
}

fn drive(
    cfg: rust_vm_sandbox::SandboxConfig,
    bundle: &BusyboxBundle,
    marks: &Marks,
    t0: Instant,
) -> Result<Report> {
    let cfg_state_dir = cfg.state_dir.clone();
    // Start returns once the agent answered `version` over the VMM's vsock socket.
    let sandbox = Sandbox::start(cfg).context("the sandbox did not start")?;
    mark(marks, AGENT_ANSWERED, t0.elapsed());
    let agent = sandbox
        .agent_info()
        .cloned()
        .context("start records the agent's version")?;
    // More round trips on the same connection: the agent keeps serving.
    let agent_again = sandbox.client().version().context("version over vsock")?;
    sandbox.client().ping().context("ping over vsock")?;
    mark(marks, PINGED, t0.elapsed());
    let state = cfg_state_dir.display().to_string();
    let vmm_confinement = procs::vmm_pids(&state)
        .first()
        .map(|&pid| procs::Confinement::of(pid))
        .context("no VMM process names the sandbox's state directory")?;
    let virtiofsd_confinement = procs::processes()
        .into_iter()
        .filter(|(_, argv)| {
            argv.first().is_some_and(|a| a.ends_with("/virtiofsd"))
                && argv.iter().any(|a| a.contains(&state))
        })
        .map(|(pid, _)| procs::Confinement::of(pid))
        .collect();

    let rootfs = bundle.root();
    let spec = serde_json::from_slice(&std::fs::read(bundle.config())?)?;
    let (source, spec) = sandbox.prepare_container(ID, bundle.path(), &rootfs, &spec)?;
    sandbox
        .client()
        .create_container(CreateContainer {
            container_id: ID.into(),
            spec: Box::new(spec),
            rootfs: source,
            terminal: false,
            console_size: None,
            stdin: false,
        })
        .context("create")?;
    mark(marks, CREATED, t0.elapsed());
    let mut stdout = sandbox.connect_stream(ID, None, StreamKind::Stdout)?;
    let mut stderr = sandbox.connect_stream(ID, None, StreamKind::Stderr)?;
    let errors = thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });
    sandbox.client().start(ID).context("start")?;
    mark(marks, STARTED, t0.elapsed());
    let mut out = String::new();
    stdout.read_to_string(&mut out).context("reading stdout")?;
    mark(marks, OUTPUT_READ, t0.elapsed());
    let status = sandbox.client().wait(ID, None).context("wait")?;
    mark(marks, EXITED, t0.elapsed());
    let err = match errors.join() {
        Ok(read) => read.context("reading stderr")?,
        Err(_) => bail!("the stderr reader panicked"),
    };
    sandbox
        .client()
        .remove_container(ID, true)
        .context("remove")?;
    sandbox.release_container(ID, &rootfs)?;
    mark(marks, REMOVED, t0.elapsed());
    let vmm_pid = sandbox.pid();
    sandbox.shutdown().context("shutdown")?;
    mark(marks, SHUT_DOWN, t0.elapsed());
    Ok(Report {
        agent,
        agent_again,
        stdout: out,
        stderr: err,
        exit_code: status.exit_code,
        console: String::new(),
        vmm_pid,
        vmm_confinement,
        virtiofsd_confinement,
        state_dir: PathBuf::new(),
        milestones: BTreeMap::new(),
    })
}
