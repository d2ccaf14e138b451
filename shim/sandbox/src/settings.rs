//! Small settings shared by the runtime configuration and the sandbox: the back-end and the log
//! level (the VMM's).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A KVM microVM per sandbox (the product).
    #[default]
    Vm,
    /// The agent on the host in fresh namespaces (tests and debugging only: no VM isolation).
    Namespaces,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vm => "vm",
            Backend::Namespaces => "namespaces",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vm" => Ok(Backend::Vm),
            "namespaces" => Ok(Backend::Namespaces),
            other => Err(format!(
                "unknown sandbox back-end {other:?} (expected \"vm\", or \"namespaces\" for tests and debugging)"
            )),
        }
    }
}

/// Log verbosity (`log_level`, `--log-level`): the VMM's levels, passed on to the VMM and the
/// agent as they are.
pub use vmm_config::LogLevel;

/// How a container's root file system reaches the guest (`rootfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RootfsMode {
    /// Through the pod's virtio-fs share, without a copy (docs/virtio-fs.md).
    #[default]
    #[serde(rename = "virtio-fs")]
    VirtioFs,
    /// Copied into an ext4 image on virtio-blk: the pod's first container's image is its boot
    /// disk, later members need pod disk slots.
    #[serde(rename = "block")]
    Block,
}

impl RootfsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RootfsMode::VirtioFs => "virtio-fs",
            RootfsMode::Block => "block",
        }
    }
}

impl fmt::Display for RootfsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// virtiofsd's `--cache` (`virtiofs_cache`): how long the guest may trust what it cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VirtiofsCache {
    /// Nothing cached: every access asks the host (host-side changes seen at once).
    Never,
    /// Cached for a short time (about a second), as NFS does.
    #[default]
    Auto,
    /// Cached until the guest drops it: fastest, host-side changes may stay unseen.
    Always,
}

impl VirtiofsCache {
    pub fn as_str(self) -> &'static str {
        match self {
            VirtiofsCache::Never => "never",
            VirtiofsCache::Auto => "auto",
            VirtiofsCache::Always => "always",
        }
    }
}

/// Where the guest's own root (the agent as `/init`) comes from (`guest_root`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GuestRoot {
    /// The read-only guest image on the first virtio-blk disk (`guest_image`): every VM reads
    /// the one file (one copy in the host's page cache; each guest caches what it read in its own
    /// RAM, docs/guest-image.md).
    #[default]
    Image,
    /// The initramfs (`initramfs`), copied into each VM's memory at boot: the fallback.
    Initramfs,
}

impl GuestRoot {
    pub fn as_str(self) -> &'static str {
        match self {
            GuestRoot::Image => "image",
            GuestRoot::Initramfs => "initramfs",
        }
    }
}

impl fmt::Display for GuestRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GuestRoot {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "image" => Ok(GuestRoot::Image),
            "initramfs" => Ok(GuestRoot::Initramfs),
            other => Err(format!(
                "unknown guest root {other:?} (expected \"image\" or \"initramfs\")"
            )),
        }
    }
}
