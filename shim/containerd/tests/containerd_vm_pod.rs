//! A pod on the `vm` back-end through containerd with `rootfs = "block"` (the ext4-copy path; the
//! default virtio-fs path is in containerd_vm.rs): the pod's sandbox container boots the VM with
//! two pod disk slots; two containers that join the pod one after the other run from a slot (the
//! second reuses the slot the first freed); the VMM killed with SIGKILL ends the pod, reported
//! exited, and deleting it leaves nothing behind.
//!
//! Needs root, /dev/kvm, containerd, umoci, busybox-static and the guest kernel
//! (`guest-kernel/build.sh` installs /var/lib/rust-vm/vmlinux); builds the static agent into a
//! guest image (rootfs/build-guest-image.sh). The guest boots in ~30 s on this PVM host.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::{Containerd, GUEST_STEP, IMAGE, NO_CPU_SHARES, RUNTIME};
use rust_vm_test_support::guest_image;

const KERNEL: &str = "/var/lib/rust-vm/vmlinux";
const SANDBOX: [&str; 4] = [
    "--annotation",
    "io.kubernetes.cri.container-type=sandbox",
    "--annotation",
    "io.kubernetes.cri.sandbox-id=vmpod",
];
const MEMBER: [&str; 4] = [
    "--annotation",
    "io.kubernetes.cri.container-type=container",
    "--annotation",
    "io.kubernetes.cri.sandbox-id=vmpod",
];

#[test]
#[ignore = "needs /dev/kvm and root; boots the guest (~1 min)"]
fn pod_members_run_from_disk_slots_on_the_vm_backend() {
    assert!(
        Path::new(KERNEL).is_file(),
        "{KERNEL} missing: run guest-kernel/build.sh"
    );
    let _serial = common::serial();
    let ctd = Containerd::start("vmpod");
    let config = ctd.write_vm_config(
        KERNEL,
        &guest_image::with_agent(&ctd.dir),
        "agent_timeout_secs = 300\nrootfs = \"block\"\npod_disk_slots = 2\npod_disk_max_mib = 256\n",
    );
    let config_arg = config.to_string_lossy().into_owned();
    let ctr_run = |extra: &[&str], annotations: &[&str], id: &str, cmd: &[&str]| {
        let mut argv = vec!["run"];
        argv.extend_from_slice(extra);
        argv.extend_from_slice(&["--runtime", RUNTIME, "--runtime-config-path", &config_arg]);
        argv.extend_from_slice(&NO_CPU_SHARES);
        argv.extend_from_slice(annotations);
        argv.extend_from_slice(&[IMAGE, id]);
        argv.extend_from_slice(cmd);
        ctd.ctr_ok(&argv)
    };

    ctr_run(&["-d"], &SANDBOX, "vmpod", &["sleep", "1000"]);
    ctd.wait_for_status("vmpod", Some("RUNNING"), GUEST_STEP);
    let state = common::sandbox_state_dir("default", "vmpod");
    let slot0 = state.join("vm/slot-0.img");
    assert_eq!(
        std::fs::metadata(&slot0).expect("slot-0.img").len(),
        256 << 20
    );

    for id in ["app1", "app2"] {
        let out = ctr_run(&["--rm"], &MEMBER, id, &["echo", "hi from a slot"]);
        assert_eq!(out.trim_end(), "hi from a slot", "{id}");
        assert_eq!(
            std::fs::metadata(&slot0).expect("slot-0.img").blocks(),
            0,
            "{id}'s slot was not freed"
        );
    }
    let console = std::fs::read_to_string(state.join("vm/console.log")).unwrap_or_default();
    assert!(console.contains("[vdb]"), "{console}");

    // The VMM killed with SIGKILL: the pod's container is reported exited, virtiofsd goes with
    // its client, and deleting the pod leaves nothing.
    let state_text = state.to_string_lossy().into_owned();
    let vmms = rust_vm_test_support::vmm_pids(&state_text);
    assert_eq!(vmms.len(), 1, "the pod's VMM: {vmms:?}");
    // SAFETY: kill(2) of the pod's VMM, found by its state directory.
    unsafe { libc::kill(vmms[0] as i32, libc::SIGKILL) };
    ctd.wait_for_status("vmpod", Some("STOPPED"), GUEST_STEP);
    ctd.ctr_ok(&["task", "delete", "vmpod"]);
    ctd.ctr_ok(&["containers", "rm", "vmpod"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = rust_vm_test_support::processes_mentioning(&state_text);
        let shims = ctd.shim_pids();
        if left.is_empty() && shims.is_empty() && !state.exists() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: state {}, shims {shims:?}, processes {left:?}",
            state.exists(),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
