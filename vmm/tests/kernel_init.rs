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

use std::time::{Duration, Instant};

use common::{kernel_path, require_kvm, scratch_dir, RunningVmm};
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

#[test]
#[ignore = "needs /dev/kvm and the guest kernel; boots to user space (tens of seconds on PVM)"]
fn guest_kernel_runs_init_and_its_marker_reaches_the_console() {
    require_kvm();
    let kernel = kernel_path();
    let initrd = scratch_dir("kernel-init").join("initramfs.cpio");
    std::fs::write(&initrd, initramfs()).unwrap();
    let log = scratch_dir("kernel-init-log").join("vmm.log");
    let start = Instant::now();
    let mut vm = RunningVmm::start_logged(
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
