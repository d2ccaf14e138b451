//! Emulated devices. One folder per device; `bus` routes guest port and MMIO accesses to them.

pub mod bus;
pub mod i8042;
pub mod serial;
pub mod virtio;
