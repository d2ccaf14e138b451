//! Guest root images built through `rootfs/build-guest-image.sh` (the product's layout), cached
//! in the caller's scratch directory.

use std::path::{Path, PathBuf};

use crate::initramfs::{run_builder, stand_in_init, Init};

/// Runs `rootfs/build-guest-image.sh` into `dir` (its cache in `dir/cache`); returns the ext4
/// image `dir/guest-root.img`.
pub fn build(dir: &Path, init: Init<'_>) -> PathBuf {
    let out = dir.join("guest-root.img");
    run_builder("build-guest-image.sh", init, &[], &out, dir);
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
