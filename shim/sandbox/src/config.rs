//! The global runtime configuration, `/etc/rust-vm/config.toml`.
//!
//! Every key is optional; a missing file means "all defaults". Unknown keys are an error so a
//! typo never silently falls back to a default. The same file is read by the `rust-vm` command
//! and by the containerd shim.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use vmm_config::CpuTemplate;

use crate::host::{
    HostKind, Workarounds, EMULATING_HOST_AGENT_TIMEOUT, EMULATING_HOST_CMDLINE,
    HARDWARE_AGENT_TIMEOUT,
};
use crate::sandbox::SandboxConfig;
use crate::settings::{Backend, GuestRoot, LogLevel, RootfsMode, VirtiofsCache};
use crate::sizing::{vm_size, PodResources, VmSize};

/// Where the configuration is read from unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/rust-vm/config.toml";
/// The guest kernel installed by `scripts/setup.sh`.
pub const DEFAULT_KERNEL: &str = "/var/lib/rust-vm/vmlinux";
/// The guest initramfs (the static agent as `/init`) installed by `rootfs/build-initramfs.sh`.
pub const DEFAULT_INITRAMFS: &str = "/var/lib/rust-vm/initramfs.cpio.gz";
/// The guest's read-only root image (the static agent as `/init`) installed by
/// `rootfs/build-guest-image.sh`.
pub const DEFAULT_GUEST_IMAGE: &str = "/var/lib/rust-vm/guest-root.img";
pub const DEFAULT_VMM: &str = "rust-vm-vmm";
pub const DEFAULT_AGENT: &str = "rust-vm-agent";
pub const DEFAULT_VCPUS: u32 = 1;
pub const DEFAULT_MEM_MIB: u64 = 256;
/// Below this our guest kernel and agent do not fit.
pub const MIN_MEM_MIB: u64 = 64;
/// The longest `agent_timeout_secs` (a day): anything longer is a typo, and an unbounded value
/// overflows the deadline.
pub const MAX_AGENT_TIMEOUT_SECS: u64 = 86_400;
pub const DEFAULT_POD_DISK_SLOTS: usize = 4;
pub const DEFAULT_POD_DISK_MAX_MIB: u64 = 4096;
/// virtio-mmio has room for 19 devices here; the guest image, the boot disk, vsock and the
/// share's virtio-fs device take four.
pub const MAX_POD_DISK_SLOTS: usize = 15;
/// virtiofsd as scripts/setup.sh installs it.
pub const DEFAULT_VIRTIOFSD: &str = "/usr/local/lib/rust-vm/bin/virtiofsd";
pub const DEFAULT_VIRTIOFS_THREADS: usize = 0;
/// More virtiofsd threads than this only cost memory.
pub const MAX_VIRTIOFS_THREADS: usize = 64;
/// The most memory a pod's VM gets from its containers' limits unless `pod_max_mem_mib` says.
pub const DEFAULT_POD_MAX_MEM_MIB: u64 = 8192;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}")]
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

/// `/etc/rust-vm/config.toml`. Field names are the TOML keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Guest kernel (ELF vmlinux or bzImage).
    pub kernel: PathBuf,
    /// `image` (default: the read-only `guest_image` as the guest's root) or `initramfs` (the
    /// `initramfs` copied into the VM's memory at boot).
    pub guest_root: GuestRoot,
    /// The guest's read-only root image with the agent as `/init`.
    pub guest_image: PathBuf,
    /// Guest initramfs with the agent as `/init` (with `guest_root = "initramfs"`).
    pub initramfs: PathBuf,
    /// The VMM binary: a bare name is looked up next to the running executable, then in `$PATH`.
    pub vmm: PathBuf,
    /// The agent binary used by the `namespaces` back-end (same lookup as `vmm`).
    pub agent: PathBuf,
    /// Sandbox back-end: `vm` (the product) or `namespaces` (tests and debugging only).
    pub backend: Backend,
    pub vcpus: u32,
    pub mem_mib: u64,
    /// CPU template passed to the VMM: `conservative` (default) or `host`
    /// (docs/cpu-templates.md).
    pub cpu_template: CpuTemplate,
    /// Seconds to wait for the agent to answer after the sandbox starts. Unset: 180 when the
    /// emulation workarounds apply (the guest kernel boots through KVM's instruction emulator),
    /// 10 otherwise.
    pub agent_timeout_secs: Option<u64>,
    pub log_level: LogLevel,
    /// `auto` (default), `on` or `off`: give the guest kernel the options an instruction-emulating
    /// host needs (docs/pvm-host-boot.md). `auto` turns them on when the host is detected as one
    /// (`kvm_pvm` loaded, or no vmx/svm CPU flag).
    pub emulation_workarounds: Workarounds,
    /// Extra guest kernel command-line words. Absent: [`EMULATING_HOST_CMDLINE`] when the
    /// emulation workarounds apply, nothing elsewhere; `""` adds nothing.
    pub kernel_args: Option<String>,
    /// `vm`: spare disks a pod's sandbox gets at boot for the pod's later containers (the VMM
    /// has no hot-plug): sparse files, free until used. 0 allows one container per pod.
    pub pod_disk_slots: usize,
    /// `vm`: size of each pod disk slot in MiB: the most one later container's rootfs may take.
    pub pod_disk_max_mib: u64,
    /// `vm`: `virtio-fs` (default: containers' root file systems through the pod's share, no
    /// copy) or `block` (an ext4 copy on virtio-blk; later pod members need `pod_disk_slots`).
    pub rootfs: RootfsMode,
    /// `vm`: the virtiofsd binary (installed by scripts/setup.sh).
    pub virtiofsd: PathBuf,
    /// `vm`: virtiofsd's cache mode: `never`, `auto` (default) or `always` (docs/virtio-fs.md).
    pub virtiofs_cache: VirtiofsCache,
    /// `vm`: virtiofsd's thread pool size; 0 (default) serves requests on the queue's thread.
    pub virtiofs_threads: usize,
    /// `vm`: the most vCPUs a pod's VM gets once its containers' CPU limits are added to `vcpus`
    /// (docs/kubernetes). Unset: the host's CPUs.
    pub pod_max_vcpus: Option<u32>,
    /// `vm`: the most memory (MiB) a pod's VM gets once its containers' memory limits are added
    /// to `mem_mib`.
    pub pod_max_mem_mib: u64,
    /// Run each sandbox's host processes in a cgroup of their own bounded by the VM's size plus
    /// an overhead (default true; false for debugging only, docs/security.md).
    pub host_cgroup: bool,
    /// `vm`: start each VMM in a jail: a root of its own holding only what it needs, new
    /// namespaces, an unprivileged uid and gid of its own, no capabilities (default true; false
    /// for debugging only, docs/security.md).
    pub jail: bool,
    /// `vm`: the first jail uid/gid; a sandbox gets one of the 65536 from here (by a hash of its
    /// name). Default 1879048192 (0x70000000).
    pub jail_id_base: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            kernel: PathBuf::from(DEFAULT_KERNEL),
            guest_root: GuestRoot::default(),
            guest_image: PathBuf::from(DEFAULT_GUEST_IMAGE),
            initramfs: PathBuf::from(DEFAULT_INITRAMFS),
            vmm: PathBuf::from(DEFAULT_VMM),
            agent: PathBuf::from(DEFAULT_AGENT),
            backend: Backend::Vm,
            vcpus: DEFAULT_VCPUS,
            mem_mib: DEFAULT_MEM_MIB,
            cpu_template: CpuTemplate::default(),
            agent_timeout_secs: None,
            log_level: LogLevel::default(),
            kernel_args: None,
            emulation_workarounds: Workarounds::default(),
            pod_disk_slots: DEFAULT_POD_DISK_SLOTS,
            pod_disk_max_mib: DEFAULT_POD_DISK_MAX_MIB,
            rootfs: RootfsMode::default(),
            virtiofsd: PathBuf::from(DEFAULT_VIRTIOFSD),
            virtiofs_cache: VirtiofsCache::default(),
            virtiofs_threads: DEFAULT_VIRTIOFS_THREADS,
            pod_max_vcpus: None,
            pod_max_mem_mib: DEFAULT_POD_MAX_MEM_MIB,
            host_cgroup: true,
            jail: true,
            jail_id_base: crate::jail::DEFAULT_JAIL_ID_BASE,
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
        if !(1..=vmm_config::MAX_VCPUS).contains(&self.vcpus) {
            return Err(invalid(
                "vcpus",
                &format!("must be between 1 and {}", vmm_config::MAX_VCPUS),
            ));
        }
        if self.mem_mib < MIN_MEM_MIB {
            return Err(invalid(
                "mem_mib",
                &format!("must be at least {MIN_MEM_MIB} (MiB)"),
            ));
        }
        if let Some(secs) = self.agent_timeout_secs {
            if !(1..=MAX_AGENT_TIMEOUT_SECS).contains(&secs) {
                return Err(invalid(
                    "agent_timeout_secs",
                    &format!("must be between 1 and {MAX_AGENT_TIMEOUT_SECS}"),
                ));
            }
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
        if let Some(max) = self.pod_max_vcpus {
            if !(1..=vmm_config::MAX_VCPUS).contains(&max) {
                return Err(invalid(
                    "pod_max_vcpus",
                    &format!("must be between 1 and {}", vmm_config::MAX_VCPUS),
                ));
            }
        }
        if self.pod_max_mem_mib < MIN_MEM_MIB {
            return Err(invalid(
                "pod_max_mem_mib",
                &format!("must be at least {MIN_MEM_MIB} (MiB)"),
            ));
        }
        if !(1..=crate::jail::MAX_JAIL_ID_BASE).contains(&self.jail_id_base) {
            return Err(invalid(
                "jail_id_base",
                &format!(
                    "must be between 1 and {} (a range of {} ids follows it)",
                    crate::jail::MAX_JAIL_ID_BASE,
                    crate::jail::JAIL_ID_COUNT
                ),
            ));
        }
        if self.virtiofs_threads > MAX_VIRTIOFS_THREADS {
            return Err(invalid(
                "virtiofs_threads",
                &format!("must be at most {MAX_VIRTIOFS_THREADS}"),
            ));
        }
        Ok(())
    }

    /// The VM of a pod whose containers may use `pod` together: `vcpus` and `mem_mib` (the
    /// overhead) plus the pod's limits, within `pod_max_vcpus` and `pod_max_mem_mib`.
    pub fn pod_vm_size(&self, pod: PodResources) -> VmSize {
        let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let max_vcpus = self.pod_max_vcpus.unwrap_or_else(|| {
            u32::try_from(host_cpus)
                .unwrap_or(u32::MAX)
                .min(vmm_config::MAX_VCPUS)
        });
        vm_size(
            self.vcpus,
            self.mem_mib,
            max_vcpus,
            self.pod_max_mem_mib,
            pod,
        )
    }

    /// The sandbox configuration for one sandbox on this host, with binaries resolved.
    pub fn sandbox_config(&self, id: &str, state_dir: &Path) -> SandboxConfig {
        self.sandbox_config_for(&HostKind::detect(), id, state_dir)
    }

    /// [`RuntimeConfig::sandbox_config`] for a host of kind `host`.
    pub fn sandbox_config_for(&self, host: &HostKind, id: &str, state_dir: &Path) -> SandboxConfig {
        let decision = self.emulation_workarounds.resolve(host);
        let emulating_host = decision.apply;
        log::debug!(
            "emulating-host workarounds {}: {}",
            if emulating_host { "on" } else { "off" },
            decision.why
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
            guest_root: self.guest_root,
            guest_image: self.guest_image.clone(),
            initramfs: self.initramfs.clone(),
            vmm_path: resolve_binary(&self.vmm),
            agent_path: resolve_binary(&self.agent),
            vcpus: self.vcpus,
            mem_mib: self.mem_mib,
            cpu_template: self.cpu_template,
            agent_timeout: self
                .agent_timeout_secs
                .map_or(default_timeout, Duration::from_secs),
            emulating_host,
            log_level: self.log_level,
            rootfs: None,
            rootfs_mode: self.rootfs,
            virtiofsd: self.virtiofsd.clone(),
            virtiofs_cache: self.virtiofs_cache,
            virtiofs_threads: self.virtiofs_threads,
            console_log: None,
            host_cgroup: self.host_cgroup,
            jail: self.jail,
            jail_id_base: self.jail_id_base,
            // Only a pod's sandbox gets slots (the containerd shim sets them).
            disk_slots: 0,
            disk_slot_mib: self.pod_disk_max_mib,
            network: None,
            kernel_args: match &self.kernel_args {
                Some(args) => args.clone(),
                None if emulating_host => EMULATING_HOST_CMDLINE.to_string(),
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
    use crate::error_chain;

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
    fn unknown_key_is_named_once() {
        let err = RuntimeConfig::parse("memory = 5\n", Path::new("/etc/x.toml")).unwrap_err();
        let msg = error_chain(&err);
        assert_eq!(msg.matches("/etc/x.toml").count(), 1, "{msg}");
        assert_eq!(msg.matches("unknown field `memory`").count(), 1, "{msg}");
    }

    #[test]
    fn a_bad_value_prints_its_cause_once() {
        let err = RuntimeConfig::parse("mem_mib = \"lots\"\n", Path::new("c.toml")).unwrap_err();
        let msg = error_chain(&err);
        assert_eq!(msg.matches("TOML parse error").count(), 1, "{msg}");
        let err =
            RuntimeConfig::parse("cpu_template = \"fast\"\n", Path::new("c.toml")).unwrap_err();
        let msg = error_chain(&err);
        assert_eq!(msg.matches("unknown CPU template").count(), 1, "{msg}");
        assert!(msg.contains("host, conservative"), "{msg}");
    }

    #[test]
    fn share_settings_parse_and_bad_ones_are_named() {
        let cfg = RuntimeConfig::parse(
            "rootfs = \"block\"\nvirtiofs_cache = \"never\"\nvirtiofs_threads = 4\nvirtiofsd = \"/opt/v\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(cfg.rootfs, RootfsMode::Block);
        let sb = cfg.sandbox_config("s", Path::new("/run/s"));
        assert_eq!(sb.rootfs_mode, RootfsMode::Block);
        assert_eq!(sb.virtiofs_cache, VirtiofsCache::Never);
        assert_eq!(
            (sb.virtiofs_threads, sb.virtiofsd.as_path()),
            (4, Path::new("/opt/v"))
        );
        let defaults = RuntimeConfig::default();
        assert_eq!(defaults.rootfs, RootfsMode::VirtioFs);
        assert_eq!(defaults.virtiofs_cache, VirtiofsCache::Auto);
        let err = RuntimeConfig::parse("rootfs = \"nfs\"\n", Path::new("c.toml")).unwrap_err();
        assert!(
            error_chain(&err).contains("virtio-fs"),
            "{}",
            error_chain(&err)
        );
        let err = RuntimeConfig::parse("virtiofs_threads = 65\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("virtiofs_threads"), "{err}");
    }

    #[test]
    fn bad_backend_is_named() {
        let err = RuntimeConfig::parse("backend = \"qemu\"\n", Path::new("c.toml")).unwrap_err();
        assert!(error_chain(&err).contains("qemu"), "{err}");
    }

    #[test]
    fn the_kubernetes_node_config_of_the_docs_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/kubernetes/config.toml");
        let cfg = RuntimeConfig::load(&path, true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.guest_root, GuestRoot::Image);
        assert_eq!(cfg.guest_image, PathBuf::from(DEFAULT_GUEST_IMAGE));
    }

    #[test]
    fn invalid_values_name_the_field() {
        let err = RuntimeConfig::parse("vcpus = 0\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("vcpus"), "{err}");
        let err = RuntimeConfig::parse("mem_mib = 1\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("mem_mib"), "{err}");
        let err = RuntimeConfig::parse("pod_disk_slots = 16\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("pod_disk_slots"), "{err}");
        let err = RuntimeConfig::parse("pod_disk_max_mib = 8\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("pod_disk_max_mib"), "{err}");
        for base in [0, u32::MAX - 65_536] {
            let text = format!("jail_id_base = {base}\n");
            let err = RuntimeConfig::parse(&text, Path::new("c.toml")).unwrap_err();
            assert!(err.to_string().contains("jail_id_base"), "{err}");
        }
        let cfg =
            RuntimeConfig::parse("jail = false\njail_id_base = 100000\n", Path::new("c.toml"))
                .unwrap();
        let sb = cfg.sandbox_config("x", Path::new("/run/x"));
        assert_eq!((sb.jail, sb.jail_id_base), (false, 100_000));
        assert!(RuntimeConfig::default().jail, "jailed by default");
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
        let expected = if HostKind::detect().emulates_guest_ring0() {
            EMULATING_HOST_CMDLINE
        } else {
            ""
        };
        assert_eq!(sb.kernel_args, expected);
        let pvm = cfg.sandbox_config_for(&HostKind::Pvm, "x", Path::new("/run/x"));
        assert_eq!(pvm.kernel_args, EMULATING_HOST_CMDLINE);
        let hw = HostKind::Hardware { flag: "svm" };
        assert_eq!(
            cfg.sandbox_config_for(&hw, "x", Path::new("/run/x"))
                .kernel_args,
            ""
        );
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
        assert_eq!(sandbox.kernel_args, EMULATING_HOST_CMDLINE);
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
        // Bounded: a huge value would overflow the deadline (Instant + Duration).
        let huge = format!("agent_timeout_secs = {}\n", i64::MAX);
        let err = RuntimeConfig::parse(&huge, Path::new("c")).unwrap_err();
        assert!(err.to_string().contains("agent_timeout_secs"), "{err}");
        let err =
            RuntimeConfig::parse("emulation_workarounds = \"yes\"\n", Path::new("c")).unwrap_err();
        assert!(error_chain(&err).contains("yes"), "{err}");
    }
}
