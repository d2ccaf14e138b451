//! A kubelet-shaped CRI test suite: a private containerd with its CRI plugin, in a network
//! namespace of its own, driven through the CRI v1 gRPC API (`runtime.v1`, the `k8s-cri`
//! client) the way the kubelet drives it. Every check is a function of the suite and a runtime
//! handler name, so the same checks run against `runc` and (later) `rust-vm`.
//!
//! Run it as root: `cargo test -p rust-vm-cri-tests -- --ignored --nocapture`.

pub mod checks;
pub mod containerd;
pub mod cri;
pub mod images;
pub mod netns;
pub mod stream;
