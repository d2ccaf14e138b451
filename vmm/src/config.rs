//! The VM configuration: a JSON file and/or command-line flags, merged (flags win), then checked
//! against the host before anything is built.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::arch::cpuid::CpuTemplate;
use crate::arch::layout::MAX_VCPUS;
use crate::vstate::reflect::ReflectMode;

/// `i8042.*`: our controller has no keyboard or mouse behind it; these spare the guest's driver
/// its probe time-outs.
pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=1 nomodule i8042.noaux i8042.nomux i8042.dumbkbd";
pub const DEFAULT_VCPUS: u32 = 1;
pub const DEFAULT_MEM_MIB: u64 = 128;
/// Below this the zero page, page tables and a kernel do not fit.
pub const MIN_MEM_MIB: u64 = 2;
/// The lowest CID a guest may use: 0-2 are the hypervisor, local and host.
pub const MIN_GUEST_CID: u64 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile { path: PathBuf, source: io::Error },
    #[error("config file {}: {source}", path.display())]
    ParseFile {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("no kernel given (config field `kernel` or --kernel)")]
    MissingKernel,
    #[error("{field} {}: {source}", path.display())]
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
    #[error("block[{index}].path {}: {source}", path.display())]
    BlockImage {
        index: usize,
        path: PathBuf,
        source: io::Error,
    },
    #[error("vsock.guest_cid is {0}: it must be between {MIN_GUEST_CID} and {max}", max = u32::MAX - 1)]
    GuestCid(u64),
    #[error("vsock.uds_path {}: its directory does not exist", .0.display())]
    SocketDirMissing(PathBuf),
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidValue {
        field: &'static str,
        value: String,
        reason: String,
    },
}

/// Where the guest's serial console goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SerialOutput {
    #[default]
    Stdout,
    /// Appended to this file.
    File(PathBuf),
}

impl FromStr for SerialOutput {
    type Err = std::convert::Infallible;

    /// `stdout`, or any other string as a file path (`./stdout` names a file called stdout).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "stdout" => SerialOutput::Stdout,
            path => SerialOutput::File(PathBuf::from(path)),
        })
    }
}

impl<'de> Deserialize<'de> for SerialOutput {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let s = String::deserialize(de)?;
        Ok(s.parse().unwrap_or_default())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockDeviceConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
    /// The serial the guest reads with VIRTIO_BLK_T_GET_ID (at most 20 bytes); defaults to one
    /// derived from the image file's device and inode numbers.
    #[serde(default)]
    pub id: Option<String>,
}

impl FromStr for BlockDeviceConfig {
    type Err = ConfigError;

    /// `PATH[,ro][,id=ID]`, as given to `--block`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(',');
        let path = parts.next().filter(|p| !p.is_empty());
        let invalid = |reason: &str| ConfigError::InvalidValue {
            field: "--block",
            value: s.to_string(),
            reason: reason.to_string(),
        };
        let mut block = BlockDeviceConfig {
            path: PathBuf::from(path.ok_or_else(|| invalid("expected PATH[,ro][,id=ID]"))?),
            read_only: false,
            id: None,
        };
        for option in parts {
            match option.split_once('=') {
                None if option == "ro" => block.read_only = true,
                Some(("id", id)) if !id.is_empty() => block.id = Some(id.to_string()),
                _ => {
                    return Err(invalid(&format!(
                        "unknown option {option:?} (expected ro or id=ID)"
                    )))
                }
            }
        }
        Ok(block)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockDeviceConfig {
    pub guest_cid: u64,
    /// Host side: clients connect here; guest-initiated connections go to `<uds_path>_<port>`.
    pub uds_path: PathBuf,
}

/// Log verbosity, as a `log` level filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLevel(pub log::LevelFilter);

impl Default for LogLevel {
    fn default() -> Self {
        LogLevel(log::LevelFilter::Warn)
    }
}

impl FromStr for LogLevel {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse()
            .map(LogLevel)
            .map_err(|_| ConfigError::InvalidValue {
                field: "log_level",
                value: s.to_string(),
                reason: "expected off, error, warn, info, debug or trace".to_string(),
            })
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        String::deserialize(de)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Every setting optional: what a config file holds, and what flags override.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialConfig {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub vcpus: Option<u32>,
    pub mem_mib: Option<u64>,
    #[serde(default)]
    pub block: Vec<BlockDeviceConfig>,
    pub vsock: Option<VsockDeviceConfig>,
    pub serial: Option<SerialOutput>,
    pub cpu_template: Option<CpuTemplate>,
    pub log_level: Option<LogLevel>,
    pub reflect_emulation_failures: Option<ReflectMode>,
}

impl PartialConfig {
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

    /// `self` with every setting present in `over` replaced; block devices are appended.
    pub fn merge(mut self, over: PartialConfig) -> Self {
        self.kernel = over.kernel.or(self.kernel);
        self.initrd = over.initrd.or(self.initrd);
        self.cmdline = over.cmdline.or(self.cmdline);
        self.vcpus = over.vcpus.or(self.vcpus);
        self.mem_mib = over.mem_mib.or(self.mem_mib);
        self.block.extend(over.block);
        self.vsock = over.vsock.or(self.vsock);
        self.serial = over.serial.or(self.serial);
        self.cpu_template = over.cpu_template.or(self.cpu_template);
        self.log_level = over.log_level.or(self.log_level);
        self.reflect_emulation_failures = over
            .reflect_emulation_failures
            .or(self.reflect_emulation_failures);
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
            serial: self.serial.unwrap_or_default(),
            cpu_template: self.cpu_template.unwrap_or_default(),
            log_level: self.log_level.unwrap_or_default(),
            reflect_emulation_failures: self.reflect_emulation_failures.unwrap_or_default(),
        })
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
    pub serial: SerialOutput,
    pub cpu_template: CpuTemplate,
    pub log_level: LogLevel,
    /// Deliver the exception an instruction raises when KVM's emulator cannot run it
    /// (docs/vmm-emulation-reflection.md); `auto` turns it on for instruction-emulating hosts.
    pub reflect_emulation_failures: ReflectMode,
}

/// What this host and its KVM allow.
#[derive(Clone, Copy, Debug)]
pub struct HostLimits {
    pub max_vcpus: u32,
    pub mem_mib: u64,
}

impl HostLimits {
    pub fn probe(kvm: &kvm_ioctls::Kvm) -> Self {
        let kvm_max = u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX);
        Self {
            max_vcpus: kvm_max.min(u32::from(MAX_VCPUS)),
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
    let file = File::open(path).map_err(|source| ConfigError::UnreadableFile {
        field,
        path: path.to_path_buf(),
        source,
    })?;
    let meta = file
        .metadata()
        .map_err(|source| ConfigError::UnreadableFile {
            field,
            path: path.to_path_buf(),
            source,
        })?;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile {
            field,
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

impl VmConfig {
    /// Checks everything that can be checked before building: limits, and that files open.
    pub fn validate(&self, limits: &HostLimits) -> Result<(), ConfigError> {
        check_file("kernel", &self.kernel)?;
        if let Some(initrd) = &self.initrd {
            check_file("initrd", initrd)?;
        }
        if self.vcpus == 0 || self.vcpus > limits.max_vcpus {
            return Err(ConfigError::Vcpus {
                value: self.vcpus,
                max: limits.max_vcpus,
            });
        }
        if self.mem_mib < MIN_MEM_MIB {
            return Err(ConfigError::MemoryTooSmall {
                value: self.mem_mib,
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
            if !(MIN_GUEST_CID..u64::from(u32::MAX)).contains(&vsock.guest_cid) {
                return Err(ConfigError::GuestCid(vsock.guest_cid));
            }
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
        PartialConfig {
            kernel: Some(temp_file("vmlinux", b"\x7fELF")),
            ..Default::default()
        }
        .finish()
        .unwrap()
    }

    #[test]
    fn parses_a_full_json_file() {
        let json = br#"{
            "kernel": "/k", "initrd": "/i", "cmdline": "console=ttyS0", "vcpus": 2,
            "mem_mib": 512, "block": [{"path": "/disk.img", "read_only": true, "id": "root"}],
            "vsock": {"guest_cid": 3, "uds_path": "/run/v.sock"},
            "serial": "/tmp/console.log", "cpu_template": "host", "log_level": "debug",
            "reflect_emulation_failures": "on"
        }"#;
        let config = PartialConfig::from_file(&temp_file("full.json", json))
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(config.vcpus, 2);
        assert_eq!(config.mem_mib, 512);
        assert_eq!(config.block[0].id.as_deref(), Some("root"));
        assert!(config.block[0].read_only);
        assert_eq!(config.vsock.unwrap().guest_cid, 3);
        assert_eq!(config.serial, SerialOutput::File("/tmp/console.log".into()));
        assert_eq!(config.cpu_template, CpuTemplate::Host);
        assert_eq!(config.log_level, LogLevel(log::LevelFilter::Debug));
        assert_eq!(config.reflect_emulation_failures, ReflectMode::On);
    }

    #[test]
    fn json_errors_name_the_file_and_field() {
        let path = temp_file("typo.json", br#"{"kernel": "/k", "memory": 5}"#);
        let err = PartialConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("typo.json") && err.contains("memory"), "{err}");
        let path = temp_file("template.json", br#"{"cpu_template": "fast"}"#);
        let err = PartialConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("fast"), "{err}");
        let err = PartialConfig::from_file(Path::new("/nonexistent/vm.json")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vm.json"));
    }

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let file = PartialConfig {
            kernel: Some("/from-file".into()),
            vcpus: Some(4),
            mem_mib: Some(256),
            ..Default::default()
        };
        let flags = PartialConfig {
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
            PartialConfig::default().finish(),
            Err(ConfigError::MissingKernel)
        ));
    }

    #[test]
    fn block_flag_syntax() {
        let block: BlockDeviceConfig = "/img,ro,id=root".parse().unwrap();
        assert_eq!(block.path, PathBuf::from("/img"));
        assert!(block.read_only);
        assert_eq!(block.id.as_deref(), Some("root"));
        assert!(!"/img".parse::<BlockDeviceConfig>().unwrap().read_only);
        assert!("/img,rw".parse::<BlockDeviceConfig>().is_err());
        assert!("".parse::<BlockDeviceConfig>().is_err());
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
    fn missing_files_are_named() {
        let mut config = config_with_kernel();
        config.kernel = "/nonexistent/vmlinux".into();
        let err = config.validate(&LIMITS).unwrap_err().to_string();
        assert!(err.starts_with("kernel /nonexistent/vmlinux"), "{err}");

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
        assert!(
            err.starts_with("block[0].path /nonexistent/disk.img"),
            "{err}"
        );
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

    #[test]
    fn serial_output_parsing() {
        assert_eq!("stdout".parse::<SerialOutput>(), Ok(SerialOutput::Stdout));
        assert_eq!(
            "./stdout".parse::<SerialOutput>(),
            Ok(SerialOutput::File("./stdout".into()))
        );
        assert!("loud"
            .parse::<LogLevel>()
            .unwrap_err()
            .to_string()
            .contains("log_level"));
    }
}
