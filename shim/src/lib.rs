//! rust-vm's host side: start a sandbox (a KVM microVM, or for tests the agent in host
//! namespaces), talk to its agent, and build container root filesystem images.
//!
//! ```no_run
//! use rust_vm_shim::{RuntimeConfig, Sandbox};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = RuntimeConfig::load(std::path::Path::new(rust_vm_shim::config::DEFAULT_CONFIG_PATH), false)?;
//! let mut cfg = runtime.sandbox_config("pod1", std::path::Path::new("/run/rust-vm/pod1/sandbox"));
//! cfg.rootfs = Some("/bundle/rootfs".into());
//! let sandbox = Sandbox::start(cfg)?;
//! let rootfs = sandbox.rootfs_source(std::path::Path::new("/bundle/rootfs"))?;
//! // sandbox.client().create_container(...), start, attach stdio with connect_stream, wait ...
//! sandbox.shutdown()?;
//! # Ok(()) }
//! ```

pub mod config;
pub mod host;
pub mod rootfs;
pub mod sandbox;

pub use config::{LogLevel, RuntimeConfig};
pub use rust_vm_protocol as protocol;
pub use sandbox::{Backend, LogTail, LogTails, Sandbox, SandboxConfig, SandboxError};
