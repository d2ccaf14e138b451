//! The guest kernel from guest-kernel/ runs the initramfs `/init` under our VMM, and `/init`'s
//! marker reaches our serial console.
//!
//! On this project's PVM host guest ring 0 is instruction-emulated; what gets the kernel through
//! is documented in docs/pvm-host-boot.md: the conservative template, the command line below, the
//! kernel's `syscall_pf_fixup` patch, and the VMM reflecting the ring-0 `int3` of the alternatives
//! selftest as #BP (docs/vmm-emulation-reflection.md) — so `no_int3_selftest` is deliberately not
//! on the command line. On a hardware-KVM host the same options are harmless and the kernel gets
//! there natively.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{require_kvm, scratch_dir, VMM};
use vmm::config::host::{HostKind, EMULATING_HOST_CMDLINE};
use vmm::config::DEFAULT_CMDLINE;
use vmm::test_initramfs::{initramfs, INIT_MARKER};

/// Measured here: 15-40 s depending on the load of the 2 shared cores.
const INIT_LIMIT: Duration = Duration::from_secs(240);

/// The VMM's default command line with early output and the words the runtime gives our kernel
/// on an instruction-emulating host (docs/pvm-host-boot.md).
fn cmdline() -> String {
    format!("{DEFAULT_CMDLINE} earlyprintk=serial,ttyS0 {EMULATING_HOST_CMDLINE}")
}

fn kernel_path() -> String {
    let path = std::env::var_os("RUST_VM_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/rust-vm/vmlinux"));
    assert!(
        path.is_file(),
        "guest kernel {} is missing: build it with guest-kernel/build.sh or set RUST_VM_KERNEL",
        path.display()
    );
    path.to_str().unwrap().to_string()
}

/// The VMM with its serial console followed line by line and its log in a file.
struct Vmm {
    child: Child,
    serial_rx: mpsc::Receiver<Vec<u8>>,
    serial: String,
}

impl Vmm {
    fn start(args: &[&str], log: &Path) -> Self {
        let mut child = Command::new(VMM)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("cannot start the VMM binary");
        let mut stdout = child.stdout.take().unwrap();
        let (tx, serial_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            serial_rx,
            serial: String::new(),
        }
    }

    /// Follows the console until `done` holds or `limit` passes (or the VMM exits).
    fn wait_for(&mut self, limit: Duration, done: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while !done(&self.serial) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.serial_rx.recv_timeout(left) {
                Ok(bytes) => self.serial.extend(
                    String::from_utf8_lossy(&bytes)
                        .chars()
                        .filter(|c| *c != '\r'),
                ),
                Err(_) => return false,
            }
        }
        true
    }

    /// The exit status, or None if the VMM is still running after `limit` (then killed).
    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs /dev/kvm and the guest kernel; boots to user space (tens of seconds on PVM)"]
fn guest_kernel_runs_init_and_its_marker_reaches_the_console() {
    require_kvm();
    let kernel = kernel_path();
    let initrd = scratch_dir("kernel-init").join("initramfs.cpio");
    std::fs::write(&initrd, initramfs()).unwrap();
    let log = scratch_dir("kernel-init-log").join("vmm.log");
    let start = Instant::now();
    let mut vm = Vmm::start(
        &[
            "--kernel",
            &kernel,
            "--initrd",
            initrd.to_str().unwrap(),
            "--mem-mib",
            "128",
            "--cpu-template",
            "conservative",
            "--log-level",
            "info",
            "--cmdline",
            &cmdline(),
        ],
        &log,
    );
    let marker = format!("\n{INIT_MARKER}\n");
    let reached = vm.wait_for(INIT_LIMIT, |s| s.contains(&marker));
    let elapsed = start.elapsed();
    let status = vm.wait_exit(Duration::from_secs(60));
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        reached,
        "no {INIT_MARKER} within {INIT_LIMIT:?}; serial:\n{}\nVMM log:\n{stderr}",
        vm.serial
    );
    eprintln!("{INIT_MARKER} after {:.1} s", elapsed.as_secs_f64());
    assert!(
        vm.serial.contains("Run /init as init process"),
        "{}",
        vm.serial
    );
    // /init reboots the guest: a clean VMM exit.
    assert_eq!(status, Some(0), "VMM log:\n{stderr}");
    if HostKind::detect().emulates_guest_ring0() {
        // The alternatives selftest's int3 went to the guest as #BP and the selftest passed.
        assert!(
            stderr.contains("cannot run int3 at 0xffffffff")
                && stderr.contains("delivered vector 3 to the guest (trap)"),
            "{stderr}"
        );
        assert!(!stderr.contains("disagree"), "{stderr}");
        assert!(!vm.serial.contains("int3 selftest skipped"));
    }
}
