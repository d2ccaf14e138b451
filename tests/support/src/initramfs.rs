//! Guest initramfs builds through `rootfs/build-initramfs.sh` (the product's layout), cached in
//! the caller's scratch directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::bins::repo_root;

/// Where `/init` comes from.
pub enum Init<'a> {
    /// The static agent of this tree, which the script builds (`rootfs/agent.sh`: profile
    /// `guest`, target x86_64-unknown-linux-gnu, statically linked).
    Agent,
    /// This static binary.
    Binary(&'a Path),
}

/// Runs `rootfs/build-initramfs.sh` into `dir` (its cache in `dir/cache`); returns the archive:
/// `initramfs.cpio` when `uncompressed` (cheaper in emulated guest ring 0, docs/running.md),
/// else `initramfs.cpio.gz`.
pub fn build(dir: &Path, init: Init<'_>, uncompressed: bool) -> PathBuf {
    let out = dir.join(if uncompressed {
        "initramfs.cpio"
    } else {
        "initramfs.cpio.gz"
    });
    let extra: &[&str] = if uncompressed {
        &["--uncompressed"]
    } else {
        &[]
    };
    run_builder("build-initramfs.sh", init, extra, &out, dir);
    out
}

/// Runs `rootfs/SCRIPT` (a guest-root builder: `--agent`, `--output`, `$RUST_VM_CACHE`) with
/// `extra` arguments into `out`, its cache in `dir/cache`.
pub(crate) fn run_builder(script: &str, init: Init<'_>, extra: &[&str], out: &Path, dir: &Path) {
    let path = repo_root().join("rootfs").join(script);
    let mut cmd = Command::new(&path);
    if let Init::Binary(init) = init {
        cmd.arg("--agent").arg(init);
    }
    let status = cmd
        .args(extra)
        .arg("--output")
        .arg(out)
        .env("RUST_VM_CACHE", dir.join("cache"))
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("run {}: {e}", path.display()));
    assert!(status.success(), "{script} failed");
}

/// An uncompressed initramfs around this tree's static agent.
pub fn with_agent(dir: &Path) -> PathBuf {
    build(dir, Init::Agent, true)
}

/// A static stand-in for the agent that never answers (a busy loop): with it the failure paths
/// do not depend on how far or fast the guest boots. Needs a C compiler.
pub fn stand_in_init(dir: &Path) -> PathBuf {
    let src = dir.join("init.c");
    let init = dir.join("init");
    std::fs::write(&src, "int main(void) { for (;;) ; }\n").expect("write init.c");
    let cc = Command::new("cc")
        .args(["-static", "-Os", "-o"])
        .arg(&init)
        .arg(&src)
        .status()
        .expect("run cc (apt-get install build-essential)");
    assert!(
        cc.success(),
        "cc -static failed (apt-get install build-essential)"
    );
    init
}

/// The real initramfs layout around [`stand_in_init`] (gzip-compressed, as installed).
pub fn stand_in(dir: &Path) -> PathBuf {
    let init = stand_in_init(dir);
    build(dir, Init::Binary(&init), false)
}
