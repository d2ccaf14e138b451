//! The guest kernel boots under our VMM with a virtio-blk and a virtio-vsock device, and its
//! early log shows the command line carrying one `virtio_mmio.device=` entry per device.
//!
//! On this project's PVM host the kernel stops after its early log (docs/architecture.md), long
//! before the virtio-mmio driver probes; `virtio_guest.rs` drives the devices from a guest instead.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{require_kvm, scratch_dir, RunningVmm};

const BOOT_LIMIT: Duration = Duration::from_secs(90);

fn kernel_path() -> PathBuf {
    let path = std::env::var_os("RUST_VM_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/rust-vm/vmlinux"));
    assert!(
        path.is_file(),
        "guest kernel {} is missing: build it with guest-kernel/build.sh or set RUST_VM_KERNEL",
        path.display()
    );
    path
}

#[test]
#[ignore = "needs /dev/kvm and the guest kernel"]
fn kernel_command_line_registers_the_virtio_devices() {
    require_kvm();
    let kernel = kernel_path();
    let dir = scratch_dir("virtio-kernel-boot");
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let uds = dir.join("v.sock");
    let user_cmdline = "console=ttyS0 earlyprintk=serial,ttyS0,115200 noxsave reboot=k panic=1";

    let mut vm = RunningVmm::start(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--mem-mib",
        "256",
        "--cpu-template",
        "conservative",
        "--cmdline",
        user_cmdline,
        "--block",
        disk.to_str().unwrap(),
        "--vsock-cid",
        "3",
        "--vsock-uds",
        uds.to_str().unwrap(),
    ]);
    let expected = format!(
        "Command line: {user_cmdline} virtio_mmio.device=4K@0xd0000000:5 \
         virtio_mmio.device=4K@0xd0001000:6\n"
    );
    let done = vm.wait_for(BOOT_LIMIT, |s| {
        s.contains("Linux version 6.12") && s.contains(&expected)
    });
    assert!(
        done,
        "no {expected:?} after {BOOT_LIMIT:?}; serial:\n{}",
        vm.serial
    );
    // The VMM is up with its vsock socket while the guest boots.
    assert!(uds.exists());
}
