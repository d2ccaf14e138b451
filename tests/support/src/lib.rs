//! What rust-vm's tests and benchmarks share, once: the workspace binaries they start (built on
//! demand), initramfs builds through `rootfs/build-initramfs.sh` (also around a stand-in `/init`
//! that never answers), busybox bundles, the OCI spec the agent-side tests use, leak checks on
//! processes and mounts, and (feature `e2e`) the one end-to-end driver that boots the real VMM,
//! guest kernel and initramfs through `rust_vm_sandbox`.
//!
//! A dev-dependency only (`publish = false`). It depends on no crate of the workspace except,
//! with `e2e`, the sandbox library, so the agent's and the container library's unit tests can use
//! it without a dependency cycle.

pub mod bins;
pub mod bundle;
#[cfg(feature = "e2e")]
pub mod e2e;
pub mod escape;
pub mod guest_image;
pub mod initramfs;
pub mod netns;
pub mod procs;
pub mod spec;

pub use bins::{agent, vmm, workspace_binary};
pub use bundle::{BusyboxBundle, BUSYBOX};
pub use procs::{alive, mounts_under, processes, processes_mentioning, vmm_pids};
pub use spec::spec_json;

/// The host CPU's model name (`model name` in /proc/cpuinfo), printed with every figure.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, m)| m.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
