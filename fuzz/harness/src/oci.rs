//! OCI spec translation: JSON as the shim hands it to the agent, parsed, validated and turned
//! into the container process's setup sequence (recorded, never run).

use rust_vm_container::fuzz_api::translate_spec;

/// The first byte picks whether cgroups are on offer; the rest is the spec's JSON.
pub fn run_oci_spec(data: &[u8]) {
    let Some((&flags, json)) = data.split_first() else {
        return;
    };
    let _ = translate_spec("fuzz", json, flags & 1 == 1);
}
