//! Shared helpers: specs and a busybox rootfs (from rust-vm-test-support), parsed by this crate.

pub mod swap;

use oci_spec::runtime::Spec;

use rust_vm_container::parse_spec_json;
pub use rust_vm_test_support::{mounts_under, spec_json, BusyboxBundle as BusyboxRootfs};

// A twin of src/tests/support.rs's: each parses with the crate it is compiled with.
pub fn spec_from(v: &serde_json::Value) -> Spec {
    parse_spec_json(v.to_string().as_bytes()).expect("test spec is valid")
}
