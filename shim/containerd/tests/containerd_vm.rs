//! The `vm` back-end (the product) through containerd on this host: the shim starts our VMM,
//! which boots our guest kernel; on a PVM host a stock guest kernel never reaches user space
//! (see /work/shared/kvm-host-notes.md and docs/), so the agent never answers. `ctr run` must
//! fail within the configured time with the documented error quoting the guest console, and
//! leave nothing behind: no VMM, shim, mount, socket or sandbox state.
//!
//! Needs root, /dev/kvm, containerd, umoci, busybox-static, a C compiler and the guest kernel
//! (`guest-kernel/build.sh` installs /var/lib/rust-vm/vmlinux).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Containerd, IMAGE, NO_CPU_SHARES, RUNTIME};

const KERNEL: &str = "/var/lib/rust-vm/vmlinux";
const AGENT_TIMEOUT_SECS: u64 = 6;

/// The initramfs layout of rootfs/build-initramfs.sh around a static stand-in for the agent:
/// the guest never gets to run its /init here (see the module comment).
fn initramfs(dir: &Path) -> PathBuf {
    let src = dir.join("init.c");
    let init = dir.join("init");
    std::fs::write(&src, "int main(void) { for (;;) ; }\n").expect("write init.c");
    let cc = Command::new("cc")
        .args(["-static", "-Os", "-o"])
        .arg(&init)
        .arg(&src)
        .status()
        .expect("run cc (apt-get install build-essential)");
    assert!(cc.success(), "cc -static failed");
    let out = dir.join("initramfs.cpio.gz");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rootfs/build-initramfs.sh");
    let status = Command::new(&script)
        .arg("--agent")
        .arg(&init)
        .arg("--output")
        .arg(&out)
        .env("RUST_VM_CACHE", dir.join("cache"))
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(status.success(), "build-initramfs.sh failed");
    out
}

#[test]
#[ignore = "needs root, /dev/kvm, containerd and the guest kernel (guest-kernel/build.sh)"]
fn vm_backend_boots_the_guest_then_fails_cleanly() {
    assert!(
        Path::new(KERNEL).is_file(),
        "{KERNEL} missing: run guest-kernel/build.sh"
    );
    let _serial = common::serial();
    let ctd = Containerd::start("vm");
    let vmm = common::workspace_binary("rust-vm-vmm", "rust-vm-vmm");
    let config = ctd.dir.join("vm.toml");
    std::fs::write(
        &config,
        format!(
            "backend = \"vm\"\nkernel = \"{KERNEL}\"\ninitramfs = \"{}\"\nvmm = \"{}\"\n\
             agent_timeout_secs = {AGENT_TIMEOUT_SECS}\n",
            initramfs(&ctd.dir).display(),
            vmm.display()
        ),
    )
    .expect("write vm.toml");

    // The configuration reaches the shim as runtime options (runtimeoptions.v1 ConfigPath).
    let mut argv = vec!["run", "--rm", "--runtime", RUNTIME];
    argv.extend_from_slice(&NO_CPU_SHARES);
    let config_arg = config.to_string_lossy().into_owned();
    argv.extend_from_slice(&[
        "--runtime-config-path",
        &config_arg,
        IMAGE,
        "vm1",
        "echo",
        "hi",
    ]);
    let started = Instant::now();
    let out = ctd.ctr(&argv);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);

    assert!(
        !out.status.success(),
        "a VM on this host cannot run the container"
    );
    assert!(
        took < Duration::from_secs(AGENT_TIMEOUT_SECS + 20),
        "ctr run took {took:?} with agent_timeout_secs = {AGENT_TIMEOUT_SECS}"
    );
    let state = common::sandbox_state_dir("default", "vm1");
    let timed_out = stderr.contains(&format!(
        "the agent did not answer on vsock-uds:{}",
        state.display()
    )) && stderr.contains(&format!("within {AGENT_TIMEOUT_SECS}s"));
    let vmm_died = stderr.contains("before the agent answered");
    assert!(timed_out || vmm_died, "unexpected error:\n{stderr}");
    // The guest console is quoted, and it is our kernel's log.
    assert!(
        stderr.contains("console.log ---"),
        "no console tail:\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("[    ") && l.contains("] ")),
        "no kernel log lines in the console tail:\n{stderr}"
    );

    let state_text = state.to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let vmms: Vec<u32> = common::processes()
            .into_iter()
            .filter(|(pid, argv)| {
                common::alive(*pid) && argv.iter().any(|a| a.contains(&state_text))
            })
            .map(|(pid, _)| pid)
            .collect();
        let shims = ctd.shim_pids();
        let mounts = ctd.mounts();
        if vmms.is_empty() && shims.is_empty() && mounts.is_empty() && !state.exists() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: VMM {vmms:?}, shims {shims:?}, mounts {mounts:?}, state {}",
            state.exists()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = ctd.ctr(&["containers", "rm", "vm1"]);
}

#[test]
#[ignore = "needs root, /dev/kvm, containerd and the guest kernel (guest-kernel/build.sh)"]
fn killed_shim_takes_its_vmm_along() {
    assert!(
        Path::new(KERNEL).is_file(),
        "{KERNEL} missing: run guest-kernel/build.sh"
    );
    let _serial = common::serial();
    let ctd = Containerd::start("vmkill");
    let vmm = common::workspace_binary("rust-vm-vmm", "rust-vm-vmm");
    let config = ctd.dir.join("vm.toml");
    // Long enough for the test to find the booting VMM and kill the shim under it.
    std::fs::write(
        &config,
        format!(
            "backend = \"vm\"\nkernel = \"{KERNEL}\"\ninitramfs = \"{}\"\nvmm = \"{}\"\n\
             agent_timeout_secs = 60\n",
            initramfs(&ctd.dir).display(),
            vmm.display()
        ),
    )
    .expect("write vm.toml");
    let mut run = Command::new("ctr")
        .arg("--address")
        .arg(&ctd.socket)
        .args(["run", "--rm", "--runtime", RUNTIME])
        .args(NO_CPU_SHARES)
        .arg("--runtime-config-path")
        .arg(&config)
        .args([IMAGE, "vmk", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ctr run");

    // The sandbox's VMM is up when a process names the sandbox's state directory.
    let state = common::sandbox_state_dir("default", "vmk");
    let state_text = state.to_string_lossy().into_owned();
    let vmm_pids = || -> Vec<u32> {
        common::processes()
            .into_iter()
            .filter(|(pid, argv)| {
                common::alive(*pid)
                    && argv.first().is_some_and(|a| a.ends_with("rust-vm-vmm"))
                    && argv.iter().any(|a| a.contains(&state_text))
            })
            .map(|(pid, _)| pid)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let vmms = loop {
        let found = vmm_pids();
        if !found.is_empty() {
            break found;
        }
        assert!(Instant::now() < deadline, "no VMM started for the sandbox");
        std::thread::sleep(Duration::from_millis(50));
    };
    let shims = ctd.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    // SAFETY: kill(2) of the shim this test started through containerd.
    unsafe { libc::kill(shims[0] as i32, libc::SIGKILL) };

    // The VMM dies with the shim (parent-death signal), and `ctr run` fails.
    let status = run.wait().expect("wait for ctr");
    assert!(!status.success(), "ctr run succeeded without a shim");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u32> = vmms.iter().copied().filter(|&p| common::alive(p)).collect();
        let shims = ctd.shim_pids();
        let mounts = ctd.mounts();
        if left.is_empty() && shims.is_empty() && mounts.is_empty() && !state.exists() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: VMM {left:?}, shims {shims:?}, mounts {mounts:?}, state {}\n{}",
            state.exists(),
            common::tail(&ctd.log(), 20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = ctd.ctr(&["containers", "rm", "vmk"]);
}
