//! `rust-vm` with the `vm` back-end (the product) on this host: the VMM boots our guest kernel
//! from the guest image on virtio-blk, with vsock, and the kernel's early log reaches the
//! runtime's log. The guest image here is the real layout around a *mute* `/init` (a
//! static loop that never listens), so the agent never answers whatever the host: `run` must fail
//! within the configured time, say so, quote the guest console, and leave nothing behind. The
//! answering agent is tested in vm_e2e.rs.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bundle, processes_mentioning, run_logged, vm_command, vmm};
use rust_vm_test_support::guest_image;
use rust_vm_test_support::procs::assert_nothing_left;

const KERNEL: &str = "/var/lib/rust-vm/vmlinux";

struct Outcome {
    stderr: String,
    log: String,
    took: Duration,
    code: Option<i32>,
}

/// The `vm` back-end with the installed kernel, the mute stand-in guest image built in `work` and
/// the workspace's VMM.
fn mute_vm_command(root: &Path, work: &Path) -> Command {
    let mut cmd = vm_command(root);
    cmd.args(["--kernel", KERNEL])
        .arg("--guest-image")
        .arg(guest_image::stand_in(work))
        .arg("--vmm")
        .arg(vmm());
    cmd
}

/// [`mute_vm_command`] with the VMM out of its jail (`jail = false`).
fn unjailed_mute_vm_command(root: &Path, work: &Path) -> Command {
    let config = work.join("unjailed.toml");
    std::fs::write(&config, "jail = false\n").expect("write the config");
    let mut cmd = Command::new(common::rust_vm());
    cmd.arg("--root")
        .arg(root)
        .arg("--config")
        .arg(&config)
        .args(["--backend", "vm", "--kernel", KERNEL])
        .arg("--guest-image")
        .arg(guest_image::stand_in(work))
        .arg("--vmm")
        .arg(vmm());
    cmd
}

fn run_vm(root: &Path, work: &Path, agent_timeout: u64) -> Outcome {
    run_vm_with(mute_vm_command(root, work), work, agent_timeout)
}

/// `cmd` run to completion with the runtime's log at `info` (it says whether the VMM was jailed).
fn run_vm_with(mut cmd: Command, work: &Path, agent_timeout: u64) -> Outcome {
    cmd.args(["--log-level", "info"]);
    assert!(
        Path::new(KERNEL).exists(),
        "{KERNEL} missing: run guest-kernel/build.sh"
    );
    let bundle = bundle(&["echo", "hello"]);
    let log = work.join("runtime.log");
    let started = Instant::now();
    cmd.args(["--agent-timeout", &agent_timeout.to_string()]);
    let out = run_logged(cmd, &log, &bundle, "vm1");
    Outcome {
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        log: std::fs::read_to_string(&log).unwrap_or_default(),
        took: started.elapsed(),
        code: out.status.code(),
    }
}

fn assert_booted_our_vm(log: &str) {
    assert!(
        log.contains("Linux version 6.12"),
        "no kernel banner in the log:\n{log}"
    );
    let cmdline = log
        .lines()
        .find_map(|l| l.split("Command line: ").nth(1))
        .unwrap_or_else(|| panic!("no kernel command line in the log:\n{log}"));
    assert!(cmdline.contains("console=ttyS0"), "{cmdline}");
    assert!(
        cmdline.contains("root=/dev/vda ro rootfstype=ext4 init=/init"),
        "{cmdline}"
    );
    // Three virtio-mmio devices: the guest image (first slot), vsock and the share.
    for device in [
        "virtio_mmio.device=4K@0xd0000000:5",
        "virtio_mmio.device=4K@0xd0001000:6",
        "virtio_mmio.device=4K@0xd0002000:7",
    ] {
        assert!(cmdline.contains(device), "{cmdline}");
    }
    assert!(log.contains("BIOS-e820"), "no e820 map in the log");
}

#[test]
#[ignore = "needs root and /dev/kvm"]
fn agent_timeout_fails_in_time_with_the_console_and_leaves_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let timeout = 6;
    let out = run_vm(root.path(), work.path(), timeout);
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert!(
        out.took < Duration::from_secs(timeout + 10),
        "run took {:?} with --agent-timeout {timeout}",
        out.took
    );
    // Either the documented timeout, or (if this host's emulation fails earlier) the VMM's exit;
    // both quote the logs.
    let timed_out = out.stderr.contains(&format!(
        "the agent did not answer on vsock-uds:{}",
        root.path().display()
    ));
    let vmm_died =
        out.stderr.contains("VMM (pid") && out.stderr.contains("before the agent answered");
    assert!(timed_out || vmm_died, "unexpected error:\n{}", out.stderr);
    if timed_out {
        assert!(
            out.stderr.contains(&format!("within {timeout}s")),
            "{}",
            out.stderr
        );
    }
    assert!(
        out.stderr.contains("console.log ---"),
        "no console tail:\n{}",
        out.stderr
    );
    assert!(out.log.contains("VMM jailed in"), "{}", out.log);
    assert_booted_our_vm(&out.log);
    assert_nothing_left(root.path());
}

#[test]
#[ignore = "needs root and /dev/kvm"]
fn an_unjailed_run_fails_cleanly_on_this_host() {
    let root = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    // `jail = false` (debugging) keeps the VMM in the host's view: it still boots and goes.
    let cmd = unjailed_mute_vm_command(root.path(), work.path());
    let out = run_vm_with(cmd, work.path(), 30);
    assert!(!out.log.contains("jailed in"), "{}", out.log);
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert!(out.took < Duration::from_secs(45), "took {:?}", out.took);
    assert!(
        out.stderr.contains("before the agent answered") || out.stderr.contains("did not answer"),
        "{}",
        out.stderr
    );
    assert_booted_our_vm(&out.log);
    assert_nothing_left(root.path());
}

#[test]
#[ignore = "needs root and /dev/kvm"]
fn a_killed_run_takes_its_vmm_along_and_delete_cleans_up() {
    let root = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let bundle = bundle(&["true"]);
    let mut child = mute_vm_command(root.path(), work.path())
        .args(["--agent-timeout", "120", "run", "--bundle"])
        .arg(bundle.path())
        .arg("vm2")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rust-vm run");
    let root_text = root.path().display().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let vmm_pid = loop {
        let vmms: Vec<u32> = processes_mentioning(&root_text)
            .into_iter()
            // The VMM itself, not `rust-vm --vmm .../rust-vm-vmm run` (argv[0] decides).
            .filter(|(_, cmd)| {
                cmd.split(' ')
                    .next()
                    .is_some_and(|argv0| argv0.ends_with("rust-vm-vmm"))
            })
            .map(|(pid, _)| pid)
            .collect();
        if let Some(pid) = vmms.first() {
            break *pid;
        }
        assert!(Instant::now() < deadline, "no VMM started");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().expect("SIGKILL rust-vm run");
    let run = child.wait_with_output().expect("reap");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&run.status),
        Some(libc::SIGKILL),
        "run ended by itself before the kill: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while common::alive(vmm_pid) {
        assert!(
            Instant::now() < deadline,
            "VMM {vmm_pid} outlived its owner"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL allows no cleanup: the state stays, reported stopped, and delete removes it.
    let state = vm_command(root.path())
        .args(["state", "vm2"])
        .output()
        .expect("state");
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap_or_else(|e| {
        panic!(
            "state: {e}: {}{}",
            String::from_utf8_lossy(&state.stdout),
            String::from_utf8_lossy(&state.stderr)
        )
    });
    assert_eq!(state["status"], "stopped");
    let deleted = vm_command(root.path())
        .args(["delete", "vm2"])
        .status()
        .expect("delete");
    assert!(deleted.success());
    assert_nothing_left(root.path());
}
