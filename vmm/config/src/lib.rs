//! The contract between the sandbox (which writes `vmm.json`) and `rust-vm-vmm` (which reads it):
//! one set of types, with serde on both sides and no KVM dependency.
//!
//! * [`VmmConfig`] is the file: every setting optional, unknown keys refused. Flags of the VMM
//!   binary form a second `VmmConfig` merged over it.
//! * [`VmConfig`] is a complete configuration: [`VmmConfig::finish`] fills in the documented
//!   defaults; [`VmConfig::check_values`] checks what needs no host (the sandbox runs it before it
//!   builds anything), [`VmConfig::validate`] adds the host's limits and opens the files (the VMM
//!   runs it before it builds the VM).
//! * [`host`] decides whether this host's KVM emulates guest ring 0, and what a guest kernel needs
//!   there; the VMM, the sandbox and `rust-vm check` all ask it.

pub mod cmdline;
mod devices;
pub mod host;
mod options;
mod vm;

pub use cmdline::{BASE_CMDLINE, DEFAULT_CMDLINE};

/// An error and its sources, `: `-separated, as the VMM prints them (log lines, tests).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
pub use devices::{
    BlockDeviceConfig, FsDeviceConfig, MacAddr, NetDeviceConfig, SerialOutput, VsockDeviceConfig,
    DEFAULT_FS_QUEUE_SIZE, DEFAULT_FS_REQUEST_QUEUES, DEFAULT_NET_MTU, MIN_NET_MTU,
};
pub use options::{CpuTemplate, LogLevel, ReflectMode, SeccompMode};
pub use vm::{
    ConfigError, HostLimits, VmConfig, VmmConfig, DEFAULT_MEM_MIB, DEFAULT_VCPUS, MAX_BLOCK_ID_LEN,
    MAX_FS_TAG_LEN, MAX_QUEUE_SIZE, MAX_REQUEST_QUEUES, MAX_VCPUS, MIN_GUEST_CID, MIN_MEM_MIB,
};
