//! A kubelet-shaped CRI test suite: a private containerd with its CRI plugin, in a network
//! namespace of its own, driven through the CRI v1 gRPC API (`runtime.v1`, the `k8s-cri`
//! client) the way the kubelet drives it. Every check is a function of the suite and a runtime
//! handler name, so the same checks run against `runc` and `rust-vm`.
//!
//! As root: `cargo test -p rust-vm-cri-tests -- --ignored --nocapture` runs it against `runc`
//! (the project's test command does); `cargo run -p rust-vm-cri-tests --bin cri-suite --
//! [runc] [rust-vm]` against the handlers named.

pub mod checks;
pub mod containerd;
pub mod cri;
pub mod images;
pub mod netns;
pub mod stream;
pub mod suite;
