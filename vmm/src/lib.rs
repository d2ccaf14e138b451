//! rust-vm's microVM monitor: assembles a KVM virtual machine on the rust-vmm crates and runs it.
//!
//! Layout follows Firecracker: `builder` assembles a VM from a configuration, `devices/` holds one
//! folder per device, and x86_64 specifics live under `arch/`.

pub mod arch;
pub mod builder;
pub mod devices;
pub mod loader;
pub mod logger;
pub mod seccomp;
pub mod test_guest;
pub mod test_initramfs;
pub mod vstate;

use std::sync::{Arc, Mutex};

/// The VM configuration, defined once in `rust-vm-vmm-config` for the VMM and the sandbox.
pub use vmm_config as config;

/// Guest memory as every part of the VMM sees it.
pub type GuestMemory = vm_memory::GuestMemoryMmap;

/// The event loop: device back-ends, queue notifications and VMM control fds are its subscribers.
pub type EventManager =
    event_manager::EventManager<Arc<Mutex<dyn event_manager::MutEventSubscriber + Send>>>;
