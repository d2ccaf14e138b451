//! Pod disk slots in a real guest: a pod sandbox boots with its first container's rootfs and two
//! spare disks; a second container's rootfs is written into a slot after boot, the agent mounts
//! it from the guest device, the container runs from it; after the container is removed, the
//! slot is freed and a third container's different filesystem in the same slot is what the guest
//! reads (the agent dropped its cached blocks of the device first).

mod common;

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::{bundle, vmm, BusyboxBundle};
use rust_vm_sandbox::protocol::{CreateContainer, RootfsSource, StreamKind};
use rust_vm_sandbox::{Backend, LogLevel, RootfsMode, RuntimeConfig, Sandbox};
use rust_vm_test_support::guest_image;

const KERNEL: &str = "/var/lib/rust-vm/vmlinux";

fn spec(bundle: &BusyboxBundle) -> oci_spec::runtime::Spec {
    let text = std::fs::read(bundle.path().join("config.json")).expect("config.json");
    serde_json::from_slice(&text).expect("spec")
}

/// Creates, runs and removes one container; returns its stdout and exit code.
fn run(sandbox: &Sandbox, id: &str, bundle: &BusyboxBundle, rootfs: RootfsSource) -> (String, i32) {
    let console = || std::fs::read_to_string(sandbox.console_log()).unwrap_or_default();
    sandbox
        .client()
        .create_container(CreateContainer {
            container_id: id.into(),
            spec: Box::new(spec(bundle)),
            rootfs,
            terminal: false,
            console_size: None,
            stdin: false,
        })
        .unwrap_or_else(|e| panic!("create {id}: {e}\n{}", console()));
    let mut out = sandbox
        .connect_stream(id, None, StreamKind::Stdout)
        .expect("stdout stream");
    sandbox.client().start(id).expect("start");
    let mut text = String::new();
    out.read_to_string(&mut text).expect("read stdout");
    let status = sandbox.client().wait(id, None).expect("wait");
    sandbox.client().remove_container(id, true).expect("remove");
    (text, status.exit_code)
}

#[test]
#[ignore = "needs /dev/kvm and root; boots the guest (~1 min)"]
fn a_joining_container_runs_from_a_disk_slot_and_the_slot_is_reused() {
    assert!(
        Path::new(KERNEL).exists(),
        "{KERNEL} missing: run guest-kernel/build.sh"
    );
    let work = tempfile::tempdir().expect("tempdir");
    let state = work.path().join("sb");
    let first = bundle(&["sh", "-c", "echo first"]);
    let second = bundle(&["sh", "-c", "cat /name"]);
    let third = bundle(&["sh", "-c", "cat /name"]);
    std::fs::write(second.path().join("rootfs/name"), "second\n").expect("write");
    std::fs::write(third.path().join("rootfs/name"), "third\n").expect("write");

    let mut cfg = RuntimeConfig::default().sandbox_config("pod", &state);
    cfg.backend = Backend::Vm;
    cfg.kernel = KERNEL.into();
    // A guest image around this tree's agent (the one that flushes a device's cache before
    // mounting it): it is /dev/vda, the boot disk /dev/vdb, the slots after them.
    cfg.guest_image = guest_image::with_agent(work.path());
    cfg.vmm_path = vmm();
    cfg.mem_mib = 128;
    cfg.agent_timeout = Duration::from_secs(400);
    cfg.log_level = LogLevel::Info;
    cfg.rootfs_mode = RootfsMode::Block;
    cfg.rootfs = Some(first.path().join("rootfs"));
    cfg.disk_slots = 2;
    cfg.disk_slot_mib = 64;
    cfg.console_log = Some(work.path().join("console.log"));
    let sandbox = Sandbox::start(cfg).expect("the pod sandbox starts");

    // The guest found both slots where the shim expects them, with their size.
    let console = std::fs::read_to_string(sandbox.console_log()).unwrap_or_default();
    for name in ["[vdc] 131072 512-byte", "[vdd] 131072 512-byte"] {
        assert!(
            console.contains(name),
            "no {name} in the console:\n{console}"
        );
    }

    let slot0 = state.join("vm/slot-0.img");
    let second_rootfs = second.path().join("rootfs");
    let source = sandbox.rootfs_source(&second_rootfs).expect("a slot");
    assert_eq!(
        source,
        RootfsSource::BlockDevice {
            device: "/dev/vdc".into(),
            fstype: "ext4".into(),
            readonly: false,
        }
    );
    let (out, code) = run(&sandbox, "second", &second, source);
    assert_eq!((out.as_str(), code), ("second\n", 0));
    sandbox.release_rootfs(&second_rootfs).expect("release");
    assert_eq!(
        std::fs::metadata(&slot0).expect("slot-0").blocks(),
        0,
        "a freed slot holds no blocks"
    );

    // Same slot, another filesystem: without the agent's BLKFLSBUF the guest would serve the
    // second container's cached blocks.
    let third_rootfs = third.path().join("rootfs");
    let source = sandbox
        .rootfs_source(&third_rootfs)
        .expect("the freed slot");
    assert!(
        matches!(&source, RootfsSource::BlockDevice { device, .. } if device == Path::new("/dev/vdc"))
    );
    let (out, code) = run(&sandbox, "third", &third, source);
    assert_eq!((out.as_str(), code), ("third\n", 0));
    sandbox.release_rootfs(&third_rootfs).expect("release");

    sandbox.shutdown().expect("shutdown");
    assert!(!state.exists(), "state directory left behind");
}
