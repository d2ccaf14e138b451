//! The VM configuration: the file form, the complete form, and their checks.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{BlockDeviceConfig, CpuTemplate, LogLevel, ReflectMode, SeccompMode, SerialOutput};
use crate::{FsDeviceConfig, NetDeviceConfig, VsockDeviceConfig, DEFAULT_CMDLINE, MIN_NET_MTU};

pub const DEFAULT_VCPUS: u32 = 1;
pub const DEFAULT_MEM_MIB: u64 = 128;
/// Below this the zero page, page tables and a kernel do not fit.
pub const MIN_MEM_MIB: u64 = 2;
/// The most vCPUs a VM may have: the MP table's limit (APIC ids 0..=253, 254 the I/O APIC's).
pub const MAX_VCPUS: u32 = 254;
/// The lowest CID a guest may use: 0-2 are the hypervisor, local and host.
pub const MIN_GUEST_CID: u32 = 3;
/// virtio-blk's serial (VIRTIO_BLK_T_GET_ID) is 20 bytes.
pub const MAX_BLOCK_ID_LEN: usize = 20;
/// virtio-fs's tag field is 36 bytes.
pub const MAX_FS_TAG_LEN: usize = 36;
/// Request queues of one virtio-fs device (plus its high-priority queue): more would only cost
/// eventfds and backend threads.
pub const MAX_REQUEST_QUEUES: u16 = 63;
/// virtio queues hold at most 2^15 entries.
pub const MAX_QUEUE_SIZE: u16 = 32768;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}", path.display())]
    ReadFile { path: PathBuf, source: io::Error },
    #[error("config file {}", path.display())]
    ParseFile {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("no kernel given (config field `kernel` or --kernel)")]
    MissingKernel,
    #[error("{field} {}", path.display())]
    UnreadableFile {
        field: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{field} {} is not a regular file", path.display())]
    NotAFile { field: &'static str, path: PathBuf },
    #[error("vcpus is {value}: it must be between 1 and {max} (KVM and MP-table limit)")]
    Vcpus { value: u32, max: u32 },
    #[error("mem_mib is {value}: it must be at least {MIN_MEM_MIB}")]
    MemoryTooSmall { value: u64 },
    #[error("mem_mib is {value}: more than the host's {host_mib} MiB of RAM")]
    MemoryTooLarge { value: u64, host_mib: u64 },
    #[error("block[{index}].path {}", path.display())]
    BlockImage {
        index: usize,
        path: PathBuf,
        source: io::Error,
    },
    #[error("block[{index}].id {id:?} is {} bytes: at most {MAX_BLOCK_ID_LEN} fit", id.len())]
    BlockId { index: usize, id: String },
    #[error("fs[{index}].tag {tag:?}: {reason}")]
    FsTag {
        index: usize,
        tag: String,
        reason: String,
    },
    #[error("fs[{index}].request_queues is {value}: it must be between 1 and {max}")]
    FsQueues { index: usize, value: u16, max: u16 },
    #[error("fs[{index}].queue_size is {value}: it must be a power of two up to {MAX_QUEUE_SIZE}")]
    FsQueueSize { index: usize, value: u16 },
    #[error("fs[{index}].socket {}: its directory does not exist", path.display())]
    FsSocketDirMissing { index: usize, path: PathBuf },
    #[error("net[{index}].{field}: {reason}")]
    Net {
        index: usize,
        field: &'static str,
        reason: String,
    },
    #[error("vsock.guest_cid is {0}: it must be between {MIN_GUEST_CID} and {max}", max = u32::MAX - 1)]
    GuestCid(u32),
    #[error("vsock.uds_path {}: its directory does not exist", .0.display())]
    SocketDirMissing(PathBuf),
    #[error("kvm_fd: {0}")]
    KvmFd(String),
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidValue {
        field: &'static str,
        value: String,
        reason: String,
    },
}

/// Every setting optional: what a config file holds, and what flags override. The sandbox
/// writes it with every setting it decides; the VMM reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmmConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block: Vec<BlockDeviceConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockDeviceConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fs: Vec<FsDeviceConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net: Vec<NetDeviceConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<SerialOutput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<LogLevel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reflect_emulation_failures: Option<ReflectMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<SeccompMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kvm_fd: Option<i32>,
}

impl VmmConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigError::ParseFile {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail: every map key is a string.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// `self` with every setting present in `over` replaced; block, fs and net devices are
    /// appended.
    pub fn merge(mut self, over: VmmConfig) -> Self {
        self.kernel = over.kernel.or(self.kernel);
        self.initrd = over.initrd.or(self.initrd);
        self.cmdline = over.cmdline.or(self.cmdline);
        self.vcpus = over.vcpus.or(self.vcpus);
        self.mem_mib = over.mem_mib.or(self.mem_mib);
        self.block.extend(over.block);
        self.vsock = over.vsock.or(self.vsock);
        self.fs.extend(over.fs);
        self.net.extend(over.net);
        self.serial = over.serial.or(self.serial);
        self.cpu_template = over.cpu_template.or(self.cpu_template);
        self.log_level = over.log_level.or(self.log_level);
        self.reflect_emulation_failures = over
            .reflect_emulation_failures
            .or(self.reflect_emulation_failures);
        self.seccomp = over.seccomp.or(self.seccomp);
        self.kvm_fd = over.kvm_fd.or(self.kvm_fd);
        self
    }

    /// Fills in documented defaults; the kernel is the only required setting.
    pub fn finish(self) -> Result<VmConfig, ConfigError> {
        Ok(VmConfig {
            kernel: self.kernel.ok_or(ConfigError::MissingKernel)?,
            initrd: self.initrd,
            cmdline: self.cmdline.unwrap_or_else(|| DEFAULT_CMDLINE.to_string()),
            vcpus: self.vcpus.unwrap_or(DEFAULT_VCPUS),
            mem_mib: self.mem_mib.unwrap_or(DEFAULT_MEM_MIB),
            block: self.block,
            vsock: self.vsock,
            fs: self.fs,
            net: self.net,
            serial: self.serial.unwrap_or_default(),
            cpu_template: self.cpu_template.unwrap_or_default(),
            log_level: self.log_level.unwrap_or_default(),
            reflect_emulation_failures: self.reflect_emulation_failures.unwrap_or_default(),
            seccomp: self.seccomp.unwrap_or_default(),
            kvm_fd: self.kvm_fd,
        })
    }
}

impl From<VmConfig> for VmmConfig {
    fn from(c: VmConfig) -> Self {
        VmmConfig {
            kernel: Some(c.kernel),
            initrd: c.initrd,
            cmdline: Some(c.cmdline),
            vcpus: Some(c.vcpus),
            mem_mib: Some(c.mem_mib),
            block: c.block,
            vsock: c.vsock,
            fs: c.fs,
            net: c.net,
            serial: Some(c.serial),
            cpu_template: Some(c.cpu_template),
            log_level: Some(c.log_level),
            reflect_emulation_failures: Some(c.reflect_emulation_failures),
            seccomp: Some(c.seccomp),
            kvm_fd: c.kvm_fd,
        }
    }
}

/// A complete VM configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub vcpus: u32,
    pub mem_mib: u64,
    pub block: Vec<BlockDeviceConfig>,
    pub vsock: Option<VsockDeviceConfig>,
    /// virtio-fs devices; guest memory is shared with their back-ends (a memfd) when any is set.
    pub fs: Vec<FsDeviceConfig>,
    /// virtio-net devices, each over a tap descriptor the VMM inherits.
    pub net: Vec<NetDeviceConfig>,
    pub serial: SerialOutput,
    pub cpu_template: CpuTemplate,
    pub log_level: LogLevel,
    /// Deliver the exception an instruction raises when KVM's emulator cannot run it
    /// (docs/vmm-emulation-reflection.md); `auto` turns it on for instruction-emulating hosts.
    pub reflect_emulation_failures: ReflectMode,
    /// Each VMM thread confined to its system calls from before the guest's first instruction.
    pub seccomp: SeccompMode,
    /// `/dev/kvm` as a descriptor the VMM inherits (a jailed VMM has no `/dev`); `None`: the
    /// VMM opens `/dev/kvm` itself.
    pub kvm_fd: Option<i32>,
}

/// What this host and its KVM allow (the VMM probes them).
#[derive(Clone, Copy, Debug)]
pub struct HostLimits {
    pub max_vcpus: u32,
    pub mem_mib: u64,
}

impl HostLimits {
    /// `kvm_max_vcpus` as KVM reports it, bounded by [`MAX_VCPUS`]; the host's RAM from sysconf.
    pub fn new(kvm_max_vcpus: u32) -> Self {
        Self {
            max_vcpus: kvm_max_vcpus.min(MAX_VCPUS),
            mem_mib: host_memory_mib(),
        }
    }
}

fn host_memory_mib() -> u64 {
    // SAFETY: sysconf only reads system constants.
    let (pages, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGE_SIZE),
        )
    };
    match (u64::try_from(pages), u64::try_from(page_size)) {
        (Ok(pages), Ok(size)) if pages > 0 => pages.saturating_mul(size) >> 20,
        _ => u64::MAX,
    }
}

fn check_file(field: &'static str, path: &Path) -> Result<(), ConfigError> {
    let unreadable = |source| ConfigError::UnreadableFile {
        field,
        path: path.to_path_buf(),
        source,
    };
    let meta = File::open(path)
        .and_then(|file| file.metadata())
        .map_err(unreadable)?;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile {
            field,
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

impl VmConfig {
    /// Checks what needs no host and no file: ranges and sizes. The sandbox runs it before it
    /// builds anything for the VM.
    pub fn check_values(&self) -> Result<(), ConfigError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::Vcpus {
                value: self.vcpus,
                max: MAX_VCPUS,
            });
        }
        if self.mem_mib < MIN_MEM_MIB {
            return Err(ConfigError::MemoryTooSmall {
                value: self.mem_mib,
            });
        }
        for (index, block) in self.block.iter().enumerate() {
            if let Some(id) = block.id.as_ref().filter(|id| id.len() > MAX_BLOCK_ID_LEN) {
                return Err(ConfigError::BlockId {
                    index,
                    id: id.clone(),
                });
            }
        }
        if let Some(vsock) = &self.vsock {
            if !(MIN_GUEST_CID..u32::MAX).contains(&vsock.guest_cid) {
                return Err(ConfigError::GuestCid(vsock.guest_cid));
            }
        }
        for (index, fs) in self.fs.iter().enumerate() {
            let tag_error = |reason: &str| ConfigError::FsTag {
                index,
                tag: fs.tag.clone(),
                reason: reason.to_string(),
            };
            if fs.tag.is_empty() {
                return Err(tag_error("it is empty"));
            }
            if fs.tag.len() > MAX_FS_TAG_LEN {
                return Err(tag_error(&format!("more than {MAX_FS_TAG_LEN} bytes")));
            }
            if self.fs[..index].iter().any(|other| other.tag == fs.tag) {
                return Err(tag_error("another file system has it"));
            }
            if fs.request_queues == 0 || fs.request_queues > MAX_REQUEST_QUEUES {
                return Err(ConfigError::FsQueues {
                    index,
                    value: fs.request_queues,
                    max: MAX_REQUEST_QUEUES,
                });
            }
            if !fs.queue_size.is_power_of_two() || fs.queue_size > MAX_QUEUE_SIZE {
                return Err(ConfigError::FsQueueSize {
                    index,
                    value: fs.queue_size,
                });
            }
        }
        if let Some(fd) = self.kvm_fd {
            if fd < 0 {
                return Err(ConfigError::KvmFd(format!("{fd} is not a descriptor")));
            }
            if self.net.iter().any(|net| net.tap_fd == fd) {
                return Err(ConfigError::KvmFd(format!("{fd} is a tap's")));
            }
        }
        for (index, net) in self.net.iter().enumerate() {
            let error = |field, reason: String| ConfigError::Net {
                index,
                field,
                reason,
            };
            if net.tap_fd < 0 {
                return Err(error(
                    "tap_fd",
                    format!("{} is not a descriptor", net.tap_fd),
                ));
            }
            if self.net[..index].iter().any(|o| o.tap_fd == net.tap_fd) {
                return Err(error(
                    "tap_fd",
                    format!("{} is another device's", net.tap_fd),
                ));
            }
            if !net.mac.is_unicast() {
                return Err(error(
                    "mac",
                    format!("{} is not a unicast address", net.mac),
                ));
            }
            if self.net[..index].iter().any(|o| o.mac == net.mac) {
                return Err(error("mac", format!("{} is another device's", net.mac)));
            }
            if net.mtu < MIN_NET_MTU {
                return Err(error("mtu", format!("{} is below {MIN_NET_MTU}", net.mtu)));
            }
        }
        Ok(())
    }

    /// [`VmConfig::check_values`], then this host's limits and that every file opens.
    pub fn validate(&self, limits: &HostLimits) -> Result<(), ConfigError> {
        self.check_values()?;
        check_file("kernel", &self.kernel)?;
        if let Some(initrd) = &self.initrd {
            check_file("initrd", initrd)?;
        }
        if self.vcpus > limits.max_vcpus {
            return Err(ConfigError::Vcpus {
                value: self.vcpus,
                max: limits.max_vcpus,
            });
        }
        if self.mem_mib > limits.mem_mib {
            return Err(ConfigError::MemoryTooLarge {
                value: self.mem_mib,
                host_mib: limits.mem_mib,
            });
        }
        for (index, block) in self.block.iter().enumerate() {
            File::options()
                .read(true)
                .write(!block.read_only)
                .open(&block.path)
                .map_err(|source| ConfigError::BlockImage {
                    index,
                    path: block.path.clone(),
                    source,
                })?;
        }
        if let Some(vsock) = &self.vsock {
            // Whether the socket is in use (or a stale file to replace) is for the vsock
            // device to decide when it binds.
            let dir = vsock
                .uds_path
                .parent()
                .filter(|d| !d.as_os_str().is_empty());
            if dir.is_some_and(|d| !d.is_dir()) {
                return Err(ConfigError::SocketDirMissing(vsock.uds_path.clone()));
            }
        }
        for (index, fs) in self.fs.iter().enumerate() {
            let dir = fs.socket.parent().filter(|d| !d.as_os_str().is_empty());
            if dir.is_some_and(|d| !d.is_dir()) {
                return Err(ConfigError::FsSocketDirMissing {
                    index,
                    path: fs.socket.clone(),
                });
            }
        }
        Ok(())
    }

    pub fn mem_bytes(&self) -> u64 {
        self.mem_mib << 20
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const LIMITS: HostLimits = HostLimits {
        max_vcpus: 8,
        mem_mib: 4096,
    };

    fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rust-vm-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        File::create(&path).unwrap().write_all(contents).unwrap();
        path
    }

    fn config_with_kernel() -> VmConfig {
        VmmConfig {
            kernel: Some(temp_file("vmlinux", b"\x7fELF")),
            ..Default::default()
        }
        .finish()
        .unwrap()
    }

    use crate::error_chain as chain;

    #[test]
    fn parses_a_full_json_file() {
        let json = br#"{
            "kernel": "/k", "initrd": "/i", "cmdline": "console=ttyS0", "vcpus": 2,
            "mem_mib": 512, "block": [{"path": "/disk.img", "read_only": true, "id": "root"}],
            "vsock": {"guest_cid": 3, "uds_path": "/run/v.sock"},
            "serial": "/tmp/console.log", "cpu_template": "host", "log_level": "debug",
            "reflect_emulation_failures": "on"
        }"#;
        let config = VmmConfig::from_file(&temp_file("full.json", json))
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(config.vcpus, 2);
        assert_eq!(config.mem_mib, 512);
        assert_eq!(config.block[0].id.as_deref(), Some("root"));
        assert!(config.block[0].read_only);
        assert_eq!(config.vsock.as_ref().unwrap().guest_cid, 3);
        assert_eq!(config.serial, SerialOutput::File("/tmp/console.log".into()));
        assert_eq!(config.cpu_template, CpuTemplate::Host);
        assert_eq!(config.log_level, LogLevel::Debug);
        assert_eq!(config.reflect_emulation_failures, ReflectMode::On);
    }

    #[test]
    fn fs_devices_need_a_short_unique_tag_and_sane_queues() {
        let fs = |tag: &str| crate::FsDeviceConfig {
            socket: "/run/fs.sock".into(),
            tag: tag.into(),
            request_queues: 1,
            queue_size: 1024,
        };
        let mut config = config_with_kernel();
        config.fs = vec![fs("share")];
        config.check_values().unwrap();
        config.fs = vec![fs("share"), fs("share")];
        let err = config.check_values().unwrap_err();
        assert_eq!(
            err.to_string(),
            "fs[1].tag \"share\": another file system has it"
        );
        config.fs = vec![fs(&"t".repeat(MAX_FS_TAG_LEN + 1))];
        assert!(matches!(
            config.check_values(),
            Err(ConfigError::FsTag { .. })
        ));
        config.fs = vec![fs("")];
        assert!(matches!(
            config.check_values(),
            Err(ConfigError::FsTag { .. })
        ));
        let mut bad = fs("a");
        bad.queue_size = 1000;
        config.fs = vec![bad.clone()];
        assert!(matches!(
            config.check_values(),
            Err(ConfigError::FsQueueSize {
                index: 0,
                value: 1000
            })
        ));
        bad.queue_size = 1024;
        bad.request_queues = 0;
        config.fs = vec![bad];
        assert!(matches!(
            config.check_values(),
            Err(ConfigError::FsQueues { .. })
        ));
        let mut missing = fs("a");
        missing.socket = "/nonexistent/dir/fs.sock".into();
        config.fs = vec![missing];
        let err = config.validate(&HostLimits::new(8)).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/dir/fs.sock"),
            "{err}"
        );
    }

    #[test]
    fn what_the_sandbox_writes_the_vmm_reads_back_unchanged() {
        let mut config = config_with_kernel();
        config.block.push(BlockDeviceConfig {
            path: "/d.img".into(),
            read_only: false,
            id: Some("rootfs".into()),
        });
        config.vsock = Some(VsockDeviceConfig {
            guest_cid: 3,
            uds_path: "/run/x/vsock.sock".into(),
        });
        config.serial = SerialOutput::File("/run/x/console.log".into());
        let json = VmmConfig::from(config.clone()).to_json();
        let back: VmmConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back.finish().unwrap(), config);
    }

    #[test]
    fn json_errors_name_the_file_and_field_once() {
        let path = temp_file("typo.json", br#"{"kernel": "/k", "memory": 5}"#);
        let err = VmmConfig::from_file(&path).unwrap_err();
        let text = chain(&err);
        assert!(
            text.contains("typo.json") && text.contains("memory"),
            "{text}"
        );
        assert_eq!(text.matches("memory").count(), 1, "{text}");
        let path = temp_file("template.json", br#"{"cpu_template": "fast"}"#);
        let text = chain(&VmmConfig::from_file(&path).unwrap_err());
        assert_eq!(text.matches("\"fast\"").count(), 1, "{text}");
        let text = chain(&VmmConfig::from_file(Path::new("/nonexistent/vm.json")).unwrap_err());
        assert_eq!(text.matches("/nonexistent/vm.json").count(), 1, "{text}");
        assert!(
            text.ends_with("No such file or directory (os error 2)"),
            "{text}"
        );
    }

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let file = VmmConfig {
            kernel: Some("/from-file".into()),
            vcpus: Some(4),
            mem_mib: Some(256),
            ..Default::default()
        };
        let flags = VmmConfig {
            vcpus: Some(2),
            ..Default::default()
        };
        let config = file.merge(flags).finish().unwrap();
        assert_eq!(config.kernel, PathBuf::from("/from-file"));
        assert_eq!((config.vcpus, config.mem_mib), (2, 256));
        assert_eq!(config.cmdline, DEFAULT_CMDLINE);
        assert_eq!(config.serial, SerialOutput::Stdout);
        assert_eq!(config.cpu_template, CpuTemplate::Conservative);
        assert_eq!(config.reflect_emulation_failures, ReflectMode::Auto);
        assert!(matches!(
            VmmConfig::default().finish(),
            Err(ConfigError::MissingKernel)
        ));
    }

    #[test]
    fn value_checks_need_no_host_or_files() {
        let mut config = VmmConfig {
            kernel: Some("/nonexistent/vmlinux".into()),
            ..Default::default()
        }
        .finish()
        .unwrap();
        config.check_values().unwrap();
        config.vcpus = MAX_VCPUS + 1;
        assert!(matches!(
            config.check_values(),
            Err(ConfigError::Vcpus { max: MAX_VCPUS, .. })
        ));
        config.vcpus = 1;
        config.block.push(BlockDeviceConfig {
            path: "/x".into(),
            read_only: true,
            id: Some("x".repeat(21)),
        });
        let err = config.check_values().unwrap_err().to_string();
        assert!(err.starts_with("block[0].id"), "{err}");
        config.block.clear();
        config.vsock = Some(VsockDeviceConfig {
            guest_cid: u32::MAX,
            uds_path: "/x".into(),
        });
        assert!(matches!(
            config.check_values(),
            Err(ConfigError::GuestCid(_))
        ));
    }

    #[test]
    fn limits_are_enforced_with_named_fields() {
        let mut config = config_with_kernel();
        config.validate(&LIMITS).unwrap();

        config.vcpus = 0;
        let err = config.validate(&LIMITS).unwrap_err().to_string();
        assert!(err.contains("vcpus is 0"), "{err}");
        config.vcpus = 9;
        assert!(matches!(
            config.validate(&LIMITS),
            Err(ConfigError::Vcpus { value: 9, max: 8 })
        ));
        config.vcpus = 1;

        config.mem_mib = 0;
        assert!(config
            .validate(&LIMITS)
            .unwrap_err()
            .to_string()
            .contains("mem_mib is 0"));
        config.mem_mib = 4097;
        assert!(matches!(
            config.validate(&LIMITS),
            Err(ConfigError::MemoryTooLarge { .. })
        ));
    }

    #[test]
    fn missing_files_are_named_once() {
        let mut config = config_with_kernel();
        config.kernel = "/nonexistent/vmlinux".into();
        let text = chain(&config.validate(&LIMITS).unwrap_err());
        assert!(text.starts_with("kernel /nonexistent/vmlinux: "), "{text}");
        assert_eq!(text.matches("No such file").count(), 1, "{text}");

        let mut config = config_with_kernel();
        config.kernel = std::env::temp_dir();
        assert!(matches!(
            config.validate(&LIMITS),
            Err(ConfigError::NotAFile {
                field: "kernel",
                ..
            })
        ));

        let mut config = config_with_kernel();
        config.block.push(BlockDeviceConfig {
            path: "/nonexistent/disk.img".into(),
            read_only: true,
            id: None,
        });
        let err = config.validate(&LIMITS).unwrap_err().to_string();
        assert_eq!(err, "block[0].path /nonexistent/disk.img");
    }

    #[test]
    fn kvm_fd_must_be_a_descriptor_no_tap_has() {
        let mut config = config_with_kernel();
        config.kvm_fd = Some(4);
        config.check_values().unwrap();
        config.kvm_fd = Some(-1);
        let err = config.check_values().unwrap_err();
        assert_eq!(err.to_string(), "kvm_fd: -1 is not a descriptor");
        config.kvm_fd = Some(3);
        config.net = vec!["fd=3,mac=02:00:00:00:00:01".parse().unwrap()];
        let err = config.check_values().unwrap_err();
        assert_eq!(err.to_string(), "kvm_fd: 3 is a tap's");
        let json: VmmConfig = serde_json::from_str(r#"{"kvm_fd": 7}"#).unwrap();
        assert_eq!(json.kvm_fd, Some(7));
        let flags = VmmConfig {
            kvm_fd: Some(9),
            ..Default::default()
        };
        assert_eq!(json.merge(flags).kvm_fd, Some(9));
    }

    #[test]
    fn vsock_checks() {
        let mut config = config_with_kernel();
        config.vsock = Some(VsockDeviceConfig {
            guest_cid: 3,
            uds_path: temp_file("stale.sock", b""),
        });
        config.validate(&LIMITS).unwrap();
        config.vsock = Some(VsockDeviceConfig {
            guest_cid: 2,
            uds_path: "/tmp/free.sock".into(),
        });
        assert!(matches!(
            config.validate(&LIMITS),
            Err(ConfigError::GuestCid(2))
        ));
        config.vsock = Some(VsockDeviceConfig {
            guest_cid: 3,
            uds_path: "/nonexistent/dir/v.sock".into(),
        });
        assert!(matches!(
            config.validate(&LIMITS),
            Err(ConfigError::SocketDirMissing(_))
        ));
    }
}
