//! OCI runtime validation (tests/runtime-tools/run.sh): rust-vm (namespaces back-end) must pass
//! every case runc passes, apart from the documented known differences.

mod common;

#[test]
#[ignore = "needs root, runc, golang-go and golang-github-opencontainers-runtime-tools-dev"]
fn rust_vm_passes_what_runc_passes() {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/runtime-tools/run.sh");
    let out = std::process::Command::new(script)
        .env("RUST_VM", common::rust_vm())
        .env("RUST_VM_AGENT", common::agent())
        .output()
        .expect("running tests/runtime-tools/run.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("passed: runc"), "no summary from run.sh");
    assert!(
        out.status.success(),
        "rust-vm fails cases runc passes (see above)"
    );
}
