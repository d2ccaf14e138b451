//! The CRI suite in the project's test command: every check against `runc`, the reference, and
//! against `rust-vm` the checks on one pod that fit the test command's budget. The whole `rust-vm`
//! half takes about an hour on an instruction-emulating (PVM) host, where each exec or container
//! start costs most of a minute of emulated guest kernel work; it is run by hand with the
//! `cri-suite` program (docs/kubernetes/README.md, "CRI test suite").

use rust_vm_cri_tests::suite;

/// The `rust-vm` checks the test command runs: one pod's microVM, booted once, its main
/// container with the hostPath volumes and file mounts (one exec), its stats, and the pod's
/// removal leaving nothing behind: about 5 minutes on an AMD EPYC PVM host, where the whole half
/// took 52 minutes (docs/kubernetes/README.md).
const RUST_VM_CHECKS: &[&str] = &[
    "ImageStatus",
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "PodSizing",
    "ContainerMounts",
    "ContainerStats",
    "StopRemovePodSandbox",
];

#[test]
#[ignore = "needs root and containerd's CRI plugin"]
fn cri_suite_on_runc() {
    let outcomes = suite::run(&["runc"]);
    let failed = suite::failures(&outcomes);
    assert!(failed.is_empty(), "failed checks: {}", failed.join(", "));
}

#[test]
#[ignore = "needs root, /dev/kvm and containerd's CRI plugin; boots a microVM (minutes on PVM)"]
fn cri_suite_on_rust_vm_one_pod() {
    let only: Vec<String> = RUST_VM_CHECKS.iter().map(|c| c.to_string()).collect();
    let outcomes = suite::run_some(&["rust-vm"], Some(&only));
    assert_eq!(outcomes.len(), RUST_VM_CHECKS.len(), "checks run");
    let failed = suite::failures(&outcomes);
    assert!(failed.is_empty(), "failed checks: {}", failed.join(", "));
}
