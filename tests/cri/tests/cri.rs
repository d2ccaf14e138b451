//! The CRI suite against `runc`, the reference, in the project's test command. The `rust-vm`
//! half takes over an hour on an instruction-emulating host (each exec starts guest processes
//! through emulated ring 0), more than CI allows: it is run by hand with the `cri-suite` program
//! (docs/kubernetes/README.md, "CRI test suite").

use rust_vm_cri_tests::suite;

#[test]
#[ignore = "needs root and containerd's CRI plugin"]
fn cri_suite_on_runc() {
    let outcomes = suite::run(&["runc"]);
    let failed = suite::failures(&outcomes);
    assert!(failed.is_empty(), "failed checks: {}", failed.join(", "));
}
