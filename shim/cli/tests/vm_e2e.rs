//! End to end through the product path: our VMM boots our guest kernel with the real initramfs
//! (the static agent as `/init`, built by `rootfs/build-initramfs.sh`), and the host talks to the
//! agent over vsock: once through the sandbox library with the one end-to-end driver
//! (`rust_vm_test_support::e2e`, which the `vm_run` benchmark runs too), then through
//! `rust-vm run`. On an instruction-emulating host (PVM, this project's machines) this needs
//! the emulation workarounds the `vm` back-end applies when it detects such a host
//! (docs/pvm-host-boot.md); each boot takes tens of seconds there, well under one on hardware KVM.
//!
//! The tests share one lock: two emulated guests on a 2-core host would slow each other down past
//! any sensible bound, and one at a time keeps the timings comparable.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{bundle, run_logged, vm_command, vmm};
use rust_vm_sandbox::protocol::{AgentMode, PROTOCOL_VERSION};
use rust_vm_test_support::e2e::{self, E2e};
use rust_vm_test_support::procs::assert_nothing_left;

static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Fails (never skips) when the host or the installed guest artifacts are missing.
fn require_vm_host() {
    e2e::require_vm_host().unwrap_or_else(|e| panic!("{e}"));
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
    let bundle = bundle(args);
    let log = root
        .parent()
        .expect("state root has a parent")
        .join("runtime.log");
    let started = Instant::now();
    let mut cmd = vm_command(root);
    cmd.args(["--log-level", "info", "--vmm"]).arg(vmm());
    let out = run_logged(cmd, &log, &bundle, "e2e");
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

/// The sandbox library's path, through the one end-to-end driver (also the `vm_run` benchmark's).
#[test]
#[ignore = "needs /dev/kvm and root; boots the guest kernel (~1 min)"]
fn agent_as_init_answers_over_vsock_and_runs_a_container() {
    let _vm = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_vm_host();
    let run = E2e::new(&["sh", "-c", "echo out; echo err >&2; exit 3"]);
    let report = e2e::run(&run).unwrap_or_else(|e| panic!("end-to-end run failed: {e:#}"));
    // The sandbox started once the agent answered `version` over the VMM's vsock socket, and it
    // kept serving on the same connection.
    assert_eq!(report.agent.protocol, PROTOCOL_VERSION);
    assert_eq!(report.agent.mode, AgentMode::Guest);
    assert_eq!(report.agent_again.agent_version, report.agent.agent_version);
    assert!(
        report.console.contains("Run /init as init process"),
        "console:\n{}",
        report.console
    );
    // The container ran from the boot disk inside the guest.
    assert_eq!(
        (
            report.stdout.as_str(),
            report.stderr.as_str(),
            report.exit_code
        ),
        ("out\n", "err\n", 3),
        "console:\n{}",
        report.console
    );
    assert!(
        !common::alive(report.vmm_pid),
        "VMM {} still running after shutdown",
        report.vmm_pid
    );
    assert!(
        !report.state_dir.exists(),
        "{} left behind",
        report.state_dir.display()
    );
    for name in e2e::milestone_names() {
        match report.milestones.get(name) {
            Some(at) => eprintln!("{name:<32} {:>8.2} s", at.as_secs_f64()),
            None => eprintln!("{name:<32} not seen"),
        }
    }
}

/// `rust-vm run` on the vm back-end, one boot for several checks: stdout, stderr and the exit code
/// come back through the VM, the agent answered as the guest's PID 1, the guest kernel ran it,
/// and nothing is left.
#[test]
#[ignore = "needs /dev/kvm and root; boots the guest kernel (~1 min)"]
fn rust_vm_run_relays_output_and_exit_code_through_the_vm_and_leaves_nothing() {
    let _vm = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_dir, root) = scratch();
    let run = run_in_vm(&root, &["sh", "-c", "echo hello; echo err >&2; exit 3"]);
    assert_eq!(run.out.status.code(), Some(3), "{}", run.context());
    assert_eq!(run.stdout(), "hello\n", "{}", run.context());
    assert_eq!(
        String::from_utf8_lossy(&run.out.stderr),
        "err\n",
        "{}",
        run.context()
    );
    // The agent answered the version request from the guest, through the VMM's vsock device.
    assert!(
        run.log.contains("(Guest mode, protocol 1) answered after"),
        "{}",
        run.context()
    );
    // The guest kernel ran it: its console (appended to --log) shows our kernel.
    assert!(run.log.contains("Linux version 6.12"), "{}", run.context());
    assert_nothing_left(&root);
    eprintln!("rust-vm run (vm back-end): {:?}", run.took);
}
