//! Unit tests without root: spec validation, spec -> syscall translation and the verbs'
//! bookkeeping through `RecordingSyscalls`. The root tests that run real containers from a
//! busybox rootfs are the integration tests in `tests/root.rs`.

mod lifecycle;
mod support;
mod translation;
mod validation;
