//! The workspace's binaries, next to the running test or benchmark (the same target directory
//! and profile), brought up to date with `cargo build -p PACKAGE` on first use in each process:
//! cargo builds only the tested package's own binaries for its tests, and a binary left from an
//! older build would test old code.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The profile directory (`target/debug`, `target/release`) the running test binary was built
/// into: test and bench executables live in its `deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().expect("the test binary has a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("deps has a parent").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The binary `name` of workspace package `package` in [`profile_dir`], built there on first use
/// (with `--release` from a release-profile test or benchmark).
pub fn workspace_binary(name: &str, package: &str) -> PathBuf {
    // One build at a time within a test binary (tests run on threads), each package once.
    static BUILT: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = profile_dir();
    let binary = dir.join(name);
    if built.get_or_insert_with(HashSet::new).contains(package) && binary.is_file() {
        return binary;
    }
    let target_dir = dir.parent().expect("the profile directory has a parent");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-p", package])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(repo_root());
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo build -p {package}: {e}"));
    assert!(status.success(), "cargo build -p {package} failed");
    assert!(
        binary.is_file(),
        "{} missing after the build",
        binary.display()
    );
    built
        .get_or_insert_with(HashSet::new)
        .insert(package.to_owned());
    binary
}

/// `rust-vm-vmm`, the VMM.
pub fn vmm() -> PathBuf {
    workspace_binary("rust-vm-vmm", "rust-vm-vmm")
}

/// `rust-vm-agent` (dynamically linked: for the `namespaces` back-end and host-mode tests).
pub fn agent() -> PathBuf {
    workspace_binary("rust-vm-agent", "rust-vm-agent")
}
