//! End to end through the product path: our VMM boots our guest kernel with the real initramfs
//! (the static agent as `/init`, built by `rootfs/build-initramfs.sh`), and the host talks to the
//! agent over vsock. On an instruction-emulating host (PVM, this project's machines) this needs
//! the emulation workarounds the `vm` back-end applies when it detects such a host
//! (docs/pvm-host-boot.md); each boot takes tens of seconds there, well under one on hardware KVM.
//!
//! The tests share one lock: two emulated guests on a 2-core host would slow each other down past
//! any sensible bound, and one at a time keeps the timings comparable.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{processes_mentioning, rust_vm, BundleDir};
use rust_vm_sandbox::config::{DEFAULT_INITRAMFS, DEFAULT_KERNEL};
use rust_vm_sandbox::{Backend, RuntimeConfig, Sandbox};

static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Fails (never skips) when the host or the installed guest artifacts are missing.
fn require_vm_host() {
    assert!(
        Path::new("/dev/kvm").exists(),
        "/dev/kvm missing: these tests need KVM (hardware or PVM)"
    );
    assert!(
        Path::new(DEFAULT_KERNEL).is_file(),
        "{DEFAULT_KERNEL} missing: run guest-kernel/build.sh (or scripts/setup.sh)"
    );
    assert!(
        Path::new(DEFAULT_INITRAMFS).is_file(),
        "{DEFAULT_INITRAMFS} missing: run rootfs/build-initramfs.sh (or scripts/setup.sh)"
    );
}

/// `rust-vm-vmm` next to `rust-vm` (the same target directory), built on first use.
fn vmm() -> PathBuf {
    let vmm = rust_vm()
        .parent()
        .expect("rust-vm has a directory")
        .join("rust-vm-vmm");
    if !vmm.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "rust-vm-vmm"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build -p rust-vm-vmm");
        assert!(status.success(), "cargo build -p rust-vm-vmm failed");
    }
    vmm
}

fn assert_nothing_left(root: &Path) {
    let left = processes_mentioning(&root.display().to_string());
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let entries: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(entries.is_empty(), "state left behind: {entries:?}");
}

struct Run {
    out: Output,
    log: String,
    took: Duration,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    fn context(&self) -> String {
        format!(
            "exit {:?} after {:?}\nstderr:\n{}\nlog:\n{}",
            self.out.status.code(),
            self.took,
            String::from_utf8_lossy(&self.out.stderr),
            self.log
        )
    }
}

/// `rust-vm run` of a busybox bundle with the `vm` back-end and the documented defaults
/// (installed kernel and initramfs, the host's agent timeout, detected workarounds).
fn run_in_vm(root: &Path, args: &[&str]) -> Run {
    require_vm_host();
    let bundle = BundleDir::new(args);
    let log = root
        .parent()
        .expect("state root has a parent")
        .join("runtime.log");
    let started = Instant::now();
    let out = Command::new(rust_vm())
        .arg("--root")
        .arg(root)
        .args(["--config", "/dev/null", "--backend", "vm", "--vmm"])
        .arg(vmm())
        .arg("--log")
        .arg(&log)
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg("e2e")
        .stdin(Stdio::null())
        .output()
        .expect("running rust-vm run");
    Run {
        out,
        log: std::fs::read_to_string(&log).unwrap_or_default(),
        took: started.elapsed(),
    }
}

/// A state root inside a scratch directory (the runtime log goes next to it).
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("mkdir root");
    (dir, root)
}

#[test]
#[ignore = "needs /dev/kvm and root; boots the guest kernel (~1 min)"]
fn agent_as_init_answers_over_vsock() {
    let _vm = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_vm_host();
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("sandbox");
    let mut cfg = RuntimeConfig::default().sandbox_config("e2e-ping", &state_dir);
    cfg.backend = Backend::Vm;
    cfg.vmm_path = vmm();
    let started = Instant::now();
    // Start returns once the agent answered `version` over the VMM's vsock socket.
    let sandbox = Sandbox::start(cfg).unwrap_or_else(|e| panic!("sandbox did not start: {e}"));
    let booted = started.elapsed();
    let info = sandbox
        .agent_info()
        .cloned()
        .expect("start records the agent's version");
    assert_eq!(info.protocol, rust_vm_sandbox::protocol::PROTOCOL_VERSION);
    assert_eq!(info.mode, rust_vm_sandbox::protocol::AgentMode::Guest);
    // A second round trip on the same connection: the agent keeps serving.
    let again = sandbox.client().version().expect("version over vsock");
    assert_eq!(again.agent_version, info.agent_version);
    sandbox.client().ping().expect("ping over vsock");
    let vmm_pid = sandbox.pid();
    let console = std::fs::read_to_string(sandbox.console_log()).unwrap_or_default();
    assert!(
        console.contains("Run /init as init process"),
        "console:\n{console}"
    );
    sandbox.shutdown().expect("shutdown");
    assert!(
        !common::process_exists(vmm_pid),
        "VMM {vmm_pid} still running after shutdown"
    );
    assert!(!state_dir.exists(), "{} left behind", state_dir.display());
    eprintln!("agent answered {booted:?} after the VMM started");
}

#[test]
#[ignore = "needs /dev/kvm and root; boots the guest kernel (~1 min)"]
fn echo_runs_inside_the_vm_and_nothing_is_left() {
    let _vm = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_dir, root) = scratch();
    let run = run_in_vm(&root, &["echo", "hello"]);
    assert_eq!(run.out.status.code(), Some(0), "{}", run.context());
    assert_eq!(run.stdout(), "hello\n", "{}", run.context());
    // The guest kernel ran it: its console (appended to --log) shows our kernel and agent.
    assert!(run.log.contains("Linux version 6.12"), "{}", run.context());
    assert_nothing_left(&root);
    eprintln!("rust-vm run echo hello: {:?}", run.took);
}

#[test]
#[ignore = "needs /dev/kvm and root; boots the guest kernel (~1 min)"]
fn exit_code_comes_back_through_the_vm() {
    let _vm = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_dir, root) = scratch();
    let run = run_in_vm(&root, &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(run.out.status.code(), Some(3), "{}", run.context());
    assert_eq!(run.stdout(), "out\n", "{}", run.context());
    assert_eq!(
        String::from_utf8_lossy(&run.out.stderr),
        "err\n",
        "{}",
        run.context()
    );
    assert_nothing_left(&root);
    eprintln!("rust-vm run sh -c 'exit 3': {:?}", run.took);
}
