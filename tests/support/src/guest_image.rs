//! Guest root images built through `rootfs/build-guest-image.sh` (the product's layout), cached
//! in the caller's scratch directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::bins::repo_root;
use crate::initramfs::{stand_in_init, Init};

/// Runs `rootfs/build-guest-image.sh` into `dir` (its cache in `dir/cache`); returns the ext4
/// image `dir/guest-root.img`.
pub fn build(dir: &Path, init: Init<'_>) -> PathBuf {
    let out = dir.join("guest-root.img");
    let script = repo_root().join("rootfs/build-guest-image.sh");
    let mut cmd = Command::new(&script);
    if let Init::Binary(init) = init {
        cmd.arg("--agent").arg(init);
    }
    let status = cmd
        .arg("--output")
        .arg(&out)
        .env("RUST_VM_CACHE", dir.join("cache"))
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(status.success(), "build-guest-image.sh failed");
    out
}

/// A guest image around this tree's static agent.
pub fn with_agent(dir: &Path) -> PathBuf {
    build(dir, Init::Agent)
}

/// The real image layout around the mute stand-in `/init` ([`stand_in_init`]).
pub fn stand_in(dir: &Path) -> PathBuf {
    let init = stand_in_init(dir);
    build(dir, Init::Binary(&init))
}
