//! rust-vm's host side: the runtime configuration, the host's kind, container rootfs images, the
//! sandbox back-ends (a KVM microVM, or for tests the agent in host namespaces) and the pod
//! lifecycle that the `rust-vm` CLI and the containerd shim share.
//!
//! ```no_run
//! use std::path::Path;
//! use rust_vm_sandbox::{RuntimeConfig, Sandbox};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = RuntimeConfig::load(Path::new(rust_vm_sandbox::config::DEFAULT_CONFIG_PATH), false)?;
//! let mut cfg = runtime.sandbox_config("pod1", Path::new("/run/rust-vm/pod1/sandbox"));
//! cfg.rootfs = Some("/bundle/rootfs".into());
//! let sandbox = Sandbox::start(cfg)?;
//! # let spec = oci_spec::runtime::Spec::default();
//! // The rootfs and the spec's bind-mount sources go into the pod's share.
//! let (rootfs, spec) =
//!     sandbox.prepare_container("c1", Path::new("/bundle"), Path::new("/bundle/rootfs"), &spec)?;
//! // sandbox.client().create_container(...), start, attach stdio with connect_stream, wait ...
//! sandbox.release_container("c1", Path::new("/bundle/rootfs"))?;
//! # let _ = (rootfs, spec);
//! sandbox.shutdown()?;
//! # Ok(()) }
//! ```

pub mod config;
pub mod hooks;
pub mod host;
pub mod host_cgroup;
pub mod jail;
pub mod network;
pub mod pod;
pub mod pod_namespaces;
pub mod rootfs;
pub mod sandbox;
pub mod settings;
pub mod sizing;
pub mod stdio;

pub use config::RuntimeConfig;
pub use pod::{Created, NewContainer, Pod, PodError};
pub use rust_vm_protocol as protocol;
pub use rust_vm_protocol::{error_chain, Chain};
pub use sandbox::{LogTail, LogTails, Sandbox, SandboxConfig, SandboxError};
pub use settings::{Backend, GuestRoot, LogLevel, RootfsMode, VirtiofsCache};
