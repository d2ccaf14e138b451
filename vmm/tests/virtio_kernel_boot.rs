//! The guest kernel boots under our VMM with a virtio-blk and a virtio-vsock device, and its
//! early log shows the command line carrying one `virtio_mmio.device=` entry per device.
//!
//! On this project's PVM host the kernel stops after its early log (docs/architecture.md), long
//! before the virtio-mmio driver probes; `virtio_guest.rs` drives the devices from a guest instead.

mod common;

use std::time::Duration;

use common::{kernel_path, require_kvm, scratch_dir, sized_file, RunningVmm};

const BOOT_LIMIT: Duration = Duration::from_secs(90);

#[test]
#[ignore = "needs /dev/kvm and the guest kernel"]
fn kernel_command_line_registers_the_virtio_devices() {
    require_kvm();
    let kernel = kernel_path();
    let dir = scratch_dir("virtio-kernel-boot");
    let disk = dir.join("disk.img");
    sized_file(&disk, 1 << 20);
    let uds = dir.join("v.sock");
    let user_cmdline = "console=ttyS0 earlyprintk=serial,ttyS0,115200 noxsave reboot=k panic=1";

    let mut vm = RunningVmm::start(&[
        "--kernel",
        &kernel,
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
