//! The pod's sandbox for containerd: where its state lives (derived from namespace and sandbox
//! id, so a later `delete` finds it without the daemon), which configuration it starts from, and
//! how a container's rootfs mounts reach its agent. The sandbox itself and the container
//! lifecycle are `rust_vm_sandbox::Pod`'s.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use containerd_shim::protos::types::mount::Mount;
use oci_spec::runtime::Spec;
use rust_vm_sandbox::config::ConfigError;
use rust_vm_sandbox::sizing::PodResources;
use rust_vm_sandbox::{Pod, PodError, RootfsMode, RuntimeConfig};
use thiserror::Error;

use crate::mounts::{self, MountError};

/// Parent of every sandbox's state directory. Beside, not inside, the `rust-vm` command's state
/// root (`/run/rust-vm`): inside it, `rust-vm list` showed it as a stopped container named
/// `containerd`, and `rust-vm delete containerd` would have removed every pod's state.
pub const STATE_ROOT: &str = "/run/rust-vm-shim";

#[derive(Debug, Error)]
pub enum PodSandboxError {
    #[error("rust-vm config")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Pod(#[from] PodError),
    #[error(transparent)]
    Mount(#[from] MountError),
}

/// The state directory of a pod's sandbox. Short and fixed-length, because it holds Unix
/// sockets, and derived from namespace and sandbox id, so `delete` finds it without the daemon.
pub fn state_dir(namespace: &str, sandbox_id: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(short_hash(&format!("{namespace}/{sandbox_id}")))
}

/// Removes what a dead shim left of its sandbox. The sandbox processes are gone already
/// (parent-death signal); their files are not.
pub fn remove_state(namespace: &str, sandbox_id: &str) -> io::Result<()> {
    let dir = state_dir(namespace, sandbox_id);
    // The host cgroup the sandbox's processes left (empty: they are dead).
    let cgroup = rust_vm_sandbox::host_cgroup::name(sandbox_id, &dir);
    if let Err(err) = rust_vm_sandbox::host_cgroup::clean_up(
        Path::new(rust_vm_sandbox::host_cgroup::CGROUP_ROOT),
        &cgroup,
    ) {
        eprintln!("{}", rust_vm_sandbox::Chain(&err));
    }
    match fs::remove_dir_all(dir) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// FNV-1a, 64 bits, as 16 hex digits: stable across builds (unlike std's hasher), and
/// collisions only matter within one host's live pods.
fn short_hash(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Starts the sandbox of pod `id` with the first container's rootfs directory and spec (whose
/// network namespace is the pod's, see [`rust_vm_sandbox::network`]). A `pod` (CRI
/// sandbox, with what its containers may use together) gets a VM sized for them
/// ([`RuntimeConfig::pod_vm_size`]). Containers that join later come in through the pod's share;
/// with `rootfs = "block"` a pod gets `pod_disk_slots` spare disks for them instead.
pub fn start(
    namespace: &str,
    id: &str,
    config_path: &Path,
    first_rootfs: &Path,
    first_spec: &Spec,
    pod: Option<PodResources>,
) -> Result<Pod, PodSandboxError> {
    let must_exist = config_path != Path::new(rust_vm_sandbox::config::DEFAULT_CONFIG_PATH);
    let runtime = RuntimeConfig::load(config_path, must_exist)?;
    let dir = state_dir(namespace, id);
    // A previous shim of this pod died without `delete` running: its files are stale.
    if let Err(err) = remove_state(namespace, id) {
        log::warn!("remove stale {}: {err}", dir.display());
    }
    let mut cfg = runtime.sandbox_config(id, &dir);
    cfg.first_container(first_rootfs, first_spec);
    if let Some(resources) = pod {
        let size = runtime.pod_vm_size(resources);
        (cfg.vcpus, cfg.mem_mib) = (size.vcpus, size.mem_mib);
        let note = if size.capped {
            " (cut to pod_max_vcpus/pod_max_mem_mib)"
        } else {
            ""
        };
        log::info!(
            "pod {id}: VM of {} vCPU(s) and {} MiB for limits of {} CPU(s) and {} bytes{note}",
            size.vcpus,
            size.mem_mib,
            resources.cpus,
            resources.memory
        );
        if runtime.rootfs == RootfsMode::Block {
            cfg.disk_slots = runtime.pod_disk_slots;
        }
    }
    Ok(Pod::start(cfg)?)
}

/// Mounts a container's rootfs where the pod's agent sees it (see
/// [`Pod::in_agent_mount_namespace`]).
pub fn mount_rootfs(pod: &Pod, rootfs: &[Mount], target: &Path) -> Result<(), PodSandboxError> {
    let rootfs = rootfs.to_vec();
    let target = target.to_owned();
    Ok(pod.in_agent_mount_namespace(move || mounts::mount_rootfs(&rootfs, &target))??)
}

/// Undoes [`mount_rootfs`].
pub fn unmount_rootfs(pod: &Pod, target: &Path) -> Result<(), PodSandboxError> {
    let target = target.to_owned();
    Ok(pod.in_agent_mount_namespace(move || mounts::unmount_rootfs(&target))??)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dirs_are_short_stable_and_distinct() {
        let a = state_dir("k8s.io", &"a".repeat(64));
        let b = state_dir("default", &"a".repeat(64));
        assert_ne!(a, b);
        assert_eq!(a, state_dir("k8s.io", &"a".repeat(64)));
        // Room for `agent.sock` / `vsock.sock_1024` under the 107-byte socket limit.
        assert!(a.as_os_str().len() < 50, "{}", a.display());
        assert_eq!(short_hash(""), "cbf29ce484222325");
    }

    #[test]
    fn the_state_root_is_outside_the_rust_vm_commands_root() {
        // `rust-vm` keeps its containers in /run/rust-vm (shim/cli/src/state.rs, DEFAULT_ROOT).
        assert!(!Path::new(STATE_ROOT).starts_with("/run/rust-vm"));
    }

    #[test]
    fn removing_missing_state_is_fine() {
        remove_state("no-such-namespace", "no-such-sandbox").unwrap();
    }
}
