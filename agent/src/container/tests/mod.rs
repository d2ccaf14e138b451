//! Tests of the container module: spec validation and spec -> syscall translation without
//! root (through `RecordingSyscalls`), and root tests that run real containers from a
//! busybox rootfs (`#[ignore = "needs root"]`; run with `--include-ignored` as root).

mod lifecycle;
mod root;
mod support;
mod translation;
mod validation;
