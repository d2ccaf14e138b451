//! The global runtime configuration, `/etc/rust-vm/config.toml`.
//!
//! Every key is optional; a missing file means "all defaults". Unknown keys are an error so a
//! typo never silently falls back to a default. The same file is read by the `rust-vm` command
//! and by the containerd shim.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::host::{Workarounds, EMULATING_HOST_AGENT_TIMEOUT, HARDWARE_AGENT_TIMEOUT};
use crate::sandbox::{Backend, SandboxConfig};

/// Where the configuration is read from unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/rust-vm/config.toml";
/// The guest kernel installed by `scripts/setup.sh`.
pub const DEFAULT_KERNEL: &str = "/var/lib/rust-vm/vmlinux";
/// The guest initramfs (the static agent as `/init`) installed by `rootfs/build-initramfs.sh`.
pub const DEFAULT_INITRAMFS: &str = "/var/lib/rust-vm/initramfs.cpio.gz";
pub const DEFAULT_VMM: &str = "rust-vm-vmm";
pub const DEFAULT_AGENT: &str = "rust-vm-agent";
pub const DEFAULT_VCPUS: u8 = 1;
pub const DEFAULT_MEM_MIB: u32 = 256;
pub const DEFAULT_CPU_TEMPLATE: &str = "conservative";
pub const DEFAULT_POD_DISK_SLOTS: usize = 4;
pub const DEFAULT_POD_DISK_MAX_MIB: u64 = 4096;
/// virtio-mmio has room for 19 devices here; the boot disk and vsock take two.
pub const MAX_POD_DISK_SLOTS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{path}: {field}: {reason}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        reason: String,
    },
}

/// Log verbosity, as accepted by `log_level` and `--log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    #[default]
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }

    pub fn to_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "error" => Ok(LogLevel::Error),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            other => Err(format!(
                "unknown log level {other:?} (expected error, warn, info, debug or trace)"
            )),
        }
    }
}

/// `/etc/rust-vm/config.toml`. Field names are the TOML keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Guest kernel (ELF vmlinux or bzImage).
    pub kernel: PathBuf,
    /// Guest initramfs with the agent as `/init`.
    pub initramfs: PathBuf,
    /// The VMM binary: a bare name is looked up next to the running executable, then in `$PATH`.
    pub vmm: PathBuf,
    /// The agent binary used by the `namespaces` back-end (same lookup as `vmm`).
    pub agent: PathBuf,
    /// Sandbox back-end: `vm` (the product) or `namespaces` (tests and debugging only).
    pub backend: Backend,
    pub vcpus: u8,
    pub mem_mib: u32,
    /// CPU template passed to the VMM (see docs/architecture.md for the list).
    pub cpu_template: String,
    /// Seconds to wait for the agent to answer after the sandbox starts. Unset: 180 when the
    /// emulation workarounds apply (the guest kernel boots through KVM's instruction emulator),
    /// 10 otherwise.
    pub agent_timeout_secs: Option<u64>,
    pub log_level: LogLevel,
    /// `auto` (default), `on` or `off`: give the guest kernel the options an instruction-emulating
    /// host needs (docs/pvm-host-boot.md). `auto` turns them on when the host is detected as one
    /// (`kvm_pvm` loaded, or no vmx/svm CPU flag).
    pub emulation_workarounds: Workarounds,
    /// Extra guest kernel command-line words. Absent: [`EMULATING_HOST_KERNEL_ARGS`] when the
    /// emulation workarounds apply, nothing elsewhere; `""` adds nothing.
    pub kernel_args: Option<String>,
    /// `vm`: spare disks a pod's sandbox gets at boot for the pod's later containers (the VMM
    /// has no hot-plug): sparse files, free until used. 0 allows one container per pod.
    pub pod_disk_slots: usize,
    /// `vm`: size of each pod disk slot in MiB: the most one later container's rootfs may take.
    pub pod_disk_max_mib: u64,
}

/// What our guest kernel needs on a host whose KVM emulates guest ring 0 (PVM without a PVM
/// guest kernel) to reach user space: hide the instructions the emulator lacks, and the
/// `syscall` entry fix-up (guest-kernel patch 0002). See docs/pvm-host-boot.md.
pub const EMULATING_HOST_KERNEL_ARGS: &str = crate::host::EMULATING_HOST_CMDLINE;

/// Whether this host's KVM runs guest ring 0 in its instruction emulator (the VMM's rule, see
/// [`crate::host::detect_emulating_host`]).
pub fn host_emulates_guest_ring0() -> bool {
    crate::host::detect_emulating_host().is_some()
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            kernel: PathBuf::from(DEFAULT_KERNEL),
            initramfs: PathBuf::from(DEFAULT_INITRAMFS),
            vmm: PathBuf::from(DEFAULT_VMM),
            agent: PathBuf::from(DEFAULT_AGENT),
            backend: Backend::Vm,
            vcpus: DEFAULT_VCPUS,
            mem_mib: DEFAULT_MEM_MIB,
            cpu_template: DEFAULT_CPU_TEMPLATE.to_string(),
            agent_timeout_secs: None,
            log_level: LogLevel::default(),
            kernel_args: None,
            emulation_workarounds: Workarounds::default(),
            pod_disk_slots: DEFAULT_POD_DISK_SLOTS,
            pod_disk_max_mib: DEFAULT_POD_DISK_MAX_MIB,
        }
    }
}

impl RuntimeConfig {
    /// Reads `path`. A missing file is not an error when `must_exist` is false (the default
    /// location is optional; a path the user named is not).
    pub fn load(path: &Path, must_exist: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                return Ok(RuntimeConfig::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: RuntimeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            reason: reason.to_string(),
        };
        if self.vcpus == 0 {
            return Err(invalid("vcpus", "must be at least 1"));
        }
        if self.mem_mib < 64 {
            return Err(invalid("mem_mib", "must be at least 64 (MiB)"));
        }
        if self.agent_timeout_secs == Some(0) {
            return Err(invalid("agent_timeout_secs", "must be at least 1"));
        }
        if self.pod_disk_slots > MAX_POD_DISK_SLOTS {
            return Err(invalid(
                "pod_disk_slots",
                &format!("must be at most {MAX_POD_DISK_SLOTS}"),
            ));
        }
        if self.pod_disk_max_mib < 16 {
            return Err(invalid("pod_disk_max_mib", "must be at least 16 (MiB)"));
        }
        if self.cpu_template.is_empty() {
            return Err(invalid("cpu_template", "must not be empty"));
        }
        Ok(())
    }

    /// The sandbox configuration for one sandbox, with binaries resolved.
    pub fn sandbox_config(&self, id: &str, state_dir: &Path) -> SandboxConfig {
        let (emulating_host, why) = self.emulation_workarounds.resolve();
        log::debug!(
            "emulating-host workarounds {}: {why}",
            if emulating_host { "on" } else { "off" }
        );
        let default_timeout = if emulating_host {
            EMULATING_HOST_AGENT_TIMEOUT
        } else {
            HARDWARE_AGENT_TIMEOUT
        };
        SandboxConfig {
            backend: self.backend,
            id: id.to_string(),
            state_dir: state_dir.to_path_buf(),
            kernel: self.kernel.clone(),
            initramfs: self.initramfs.clone(),
            vmm_path: resolve_binary(&self.vmm),
            agent_path: resolve_binary(&self.agent),
            vcpus: self.vcpus,
            mem_mib: self.mem_mib,
            cpu_template: self.cpu_template.clone(),
            agent_timeout: self
                .agent_timeout_secs
                .map_or(default_timeout, Duration::from_secs),
            emulating_host,
            log_level: self.log_level,
            rootfs: None,
            console_log: None,
            // Only a pod's sandbox gets slots (the containerd shim sets them).
            disk_slots: 0,
            disk_slot_mib: self.pod_disk_max_mib,
            kernel_args: match &self.kernel_args {
                Some(args) => args.clone(),
                None if emulating_host => EMULATING_HOST_KERNEL_ARGS.to_string(),
                None => String::new(),
            },
        }
    }
}

/// Resolves a configured binary: a path with a `/` is taken as is; a bare name is looked up next
/// to the running executable first (an installed or `cargo build` tree keeps them together), then
/// in `$PATH`. When nothing is found the bare name comes back, so the error at spawn names it.
pub fn resolve_binary(configured: &Path) -> PathBuf {
    if configured.components().count() != 1 || configured.is_absolute() {
        return configured.to_path_buf();
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        // `cargo test` runs binaries from target/<profile>/deps; look one level up too.
        for candidate in [dir.join(configured), dir.join("..").join(configured)] {
            if is_executable(&candidate) {
                return candidate;
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(configured);
            if is_executable(&candidate) {
                return candidate;
            }
        }
    }
    configured.to_path_buf()
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_documented_defaults() {
        let cfg = RuntimeConfig::parse("", Path::new("x.toml")).expect("parse");
        assert_eq!(cfg, RuntimeConfig::default());
        assert_eq!(cfg.kernel, PathBuf::from("/var/lib/rust-vm/vmlinux"));
        assert_eq!(cfg.backend, Backend::Vm);
        assert_eq!(cfg.agent_timeout_secs, None);
        assert_eq!(cfg.emulation_workarounds, Workarounds::Auto);
    }

    #[test]
    fn keys_override_defaults() {
        let cfg = RuntimeConfig::parse(
            "backend = \"namespaces\"\nvcpus = 2\nmem_mib = 512\nlog_level = \"debug\"\n",
            Path::new("x.toml"),
        )
        .expect("parse");
        assert_eq!(cfg.backend, Backend::Namespaces);
        assert_eq!(cfg.vcpus, 2);
        assert_eq!(cfg.mem_mib, 512);
        assert_eq!(cfg.log_level, LogLevel::Debug);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = RuntimeConfig::parse("memory = 5\n", Path::new("/etc/x.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/x.toml"), "{msg}");
        assert!(msg.contains("memory"), "{msg}");
    }

    #[test]
    fn bad_backend_is_named() {
        let err = RuntimeConfig::parse("backend = \"qemu\"\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("qemu"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_field() {
        let err = RuntimeConfig::parse("vcpus = 0\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("vcpus"), "{err}");
        let err = RuntimeConfig::parse("mem_mib = 1\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("mem_mib"), "{err}");
        let err = RuntimeConfig::parse("pod_disk_slots = 17\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("pod_disk_slots"), "{err}");
        let err = RuntimeConfig::parse("pod_disk_max_mib = 8\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("pod_disk_max_mib"), "{err}");
        let cfg = RuntimeConfig::parse(
            "pod_disk_slots = 2\npod_disk_max_mib = 512\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!((cfg.pod_disk_slots, cfg.pod_disk_max_mib), (2, 512));
        let sb = cfg.sandbox_config("x", Path::new("/run/x"));
        assert_eq!(
            (sb.disk_slots, sb.disk_slot_mib),
            (0, 512),
            "only pods get slots"
        );
    }

    #[test]
    fn missing_default_file_is_fine_but_named_file_is_not() {
        let p = Path::new("/nonexistent/rust-vm/config.toml");
        assert!(RuntimeConfig::load(p, false).is_ok());
        let err = RuntimeConfig::load(p, true).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/rust-vm/config.toml"));
    }

    #[test]
    fn kernel_args_default_follows_the_host_and_can_be_emptied() {
        let cfg = RuntimeConfig::parse("", Path::new("c.toml")).expect("parse");
        let sb = cfg.sandbox_config("x", Path::new("/run/x"));
        let expected = if host_emulates_guest_ring0() {
            EMULATING_HOST_KERNEL_ARGS
        } else {
            ""
        };
        assert_eq!(sb.kernel_args, expected);
        let cfg = RuntimeConfig::parse("kernel_args = \"\"\n", Path::new("c.toml")).expect("parse");
        assert_eq!(cfg.sandbox_config("x", Path::new("/run/x")).kernel_args, "");
        let cfg =
            RuntimeConfig::parse("kernel_args = \"quiet\"\n", Path::new("c.toml")).expect("parse");
        assert_eq!(
            cfg.sandbox_config("x", Path::new("/run/x")).kernel_args,
            "quiet"
        );
    }

    #[test]
    fn paths_with_a_slash_are_not_searched() {
        assert_eq!(
            resolve_binary(Path::new("/opt/x/rust-vm-vmm")),
            PathBuf::from("/opt/x/rust-vm-vmm")
        );
        assert_eq!(
            resolve_binary(Path::new("./rust-vm-vmm")),
            PathBuf::from("./rust-vm-vmm")
        );
    }

    #[test]
    fn agent_timeout_default_follows_the_workarounds() {
        let dir = Path::new("/run/x");
        let mut cfg = RuntimeConfig::parse("emulation_workarounds = \"on\"\n", Path::new("c"))
            .expect("parse");
        let sandbox = cfg.sandbox_config("a", dir);
        assert!(sandbox.emulating_host);
        assert_eq!(sandbox.agent_timeout, Duration::from_secs(180));
        assert_eq!(sandbox.kernel_args, EMULATING_HOST_KERNEL_ARGS);
        cfg.emulation_workarounds = Workarounds::Off;
        let sandbox = cfg.sandbox_config("a", dir);
        assert!(!sandbox.emulating_host);
        assert_eq!(sandbox.agent_timeout, Duration::from_secs(10));
        assert_eq!(sandbox.kernel_args, "");
        cfg.agent_timeout_secs = Some(42);
        assert_eq!(
            cfg.sandbox_config("a", dir).agent_timeout,
            Duration::from_secs(42)
        );
        let err = RuntimeConfig::parse("agent_timeout_secs = 0\n", Path::new("c")).unwrap_err();
        assert!(err.to_string().contains("agent_timeout_secs"), "{err}");
        let err =
            RuntimeConfig::parse("emulation_workarounds = \"yes\"\n", Path::new("c")).unwrap_err();
        assert!(err.to_string().contains("yes"), "{err}");
    }
}
