//! Makes KVM's supported CPUID describe our VM rather than the host: per-vCPU APIC IDs, one
//! package with one single-threaded core per vCPU, and the KVM hypervisor signature.

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

const LEAF_VENDOR: u32 = 0;
const LEAF_FEATURES: u32 = 1;
const LEAF_CACHE_PARAMS: u32 = 4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_HYPERVISOR: u32 = 0x4000_0000;
const LEAF_AMD_SIZES: u32 = 0x8000_0008;

const FEATURES_EBX_APIC_ID_SHIFT: u32 = 24;
const FEATURES_EBX_LOGICAL_COUNT_SHIFT: u32 = 16;
const FEATURES_ECX_HYPERVISOR: u32 = 1 << 31;
const FEATURES_EDX_HTT: u32 = 1 << 28;

const TOPOLOGY_LEVEL_SMT: u32 = 1;
const TOPOLOGY_LEVEL_CORE: u32 = 2;

/// "KVMKVMKVM\0\0\0": guests enable their KVM paravirtual support (kvmclock, PV EOI) on it.
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];
const AMD_VENDOR_EBX: u32 = 0x6874_7541; // "Auth"

/// Bits needed to number `count` items: ceil(log2(count)).
fn id_bits(count: u8) -> u32 {
    u32::from(count).next_power_of_two().trailing_zeros()
}

fn max_basic_leaf(entries: &[kvm_cpuid_entry2]) -> u32 {
    entries
        .iter()
        .find(|e| e.function == LEAF_VENDOR)
        .map_or(0, |e| e.eax)
}

fn is_amd(entries: &[kvm_cpuid_entry2]) -> bool {
    entries
        .iter()
        .any(|e| e.function == LEAF_VENDOR && e.ebx == AMD_VENDOR_EBX)
}

/// Replaces a topology leaf (0xb or 0x1f) by SMT and core levels for `num_vcpus` cores.
fn topology_subleaves(function: u32, apic_id: u8, num_vcpus: u8) -> Vec<kvm_cpuid_entry2> {
    let level = |index: u32, shift: u32, count: u32, kind: u32| kvm_cpuid_entry2 {
        function,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax: shift,
        ebx: count,
        ecx: (kind << 8) | index,
        edx: u32::from(apic_id),
        ..Default::default()
    };
    vec![
        level(0, 0, 1, TOPOLOGY_LEVEL_SMT),
        level(
            1,
            id_bits(num_vcpus),
            u32::from(num_vcpus),
            TOPOLOGY_LEVEL_CORE,
        ),
        // The invalid level that ends the enumeration.
        level(2, 0, 0, 0),
    ]
}

/// Normalises `entries` in place for vCPU `apic_id` of `num_vcpus`.
pub fn normalize(entries: &mut Vec<kvm_cpuid_entry2>, apic_id: u8, num_vcpus: u8) {
    let max_leaf = max_basic_leaf(entries);
    let amd = is_amd(entries);
    let cores_minus_one = u32::from(num_vcpus.max(1) - 1);

    for entry in entries.iter_mut() {
        match entry.function {
            LEAF_FEATURES => {
                entry.ebx = (entry.ebx & 0x0000_ffff)
                    | (u32::from(apic_id) << FEATURES_EBX_APIC_ID_SHIFT)
                    | (u32::from(num_vcpus) << FEATURES_EBX_LOGICAL_COUNT_SHIFT);
                entry.ecx |= FEATURES_ECX_HYPERVISOR;
                if num_vcpus > 1 {
                    entry.edx |= FEATURES_EDX_HTT;
                } else {
                    entry.edx &= !FEATURES_EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS => {
                let cache_level = (entry.eax >> 5) & 0x7;
                let sharing = if cache_level >= 3 { cores_minus_one } else { 0 };
                entry.eax = (entry.eax & 0x3fff)
                    | (sharing.min(0xfff) << 14)
                    | (cores_minus_one.min(0x3f) << 26);
            }
            LEAF_AMD_SIZES if amd => {
                entry.ecx = (entry.ecx & !0xff) | cores_minus_one;
            }
            _ => {}
        }
    }

    entries.retain(|e| e.function != LEAF_TOPOLOGY && e.function != LEAF_TOPOLOGY_V2);
    if max_leaf >= LEAF_TOPOLOGY {
        entries.extend(topology_subleaves(LEAF_TOPOLOGY, apic_id, num_vcpus));
    }
    if max_leaf >= LEAF_TOPOLOGY_V2 {
        entries.extend(topology_subleaves(LEAF_TOPOLOGY_V2, apic_id, num_vcpus));
    }

    match entries.iter_mut().find(|e| e.function == LEAF_HYPERVISOR) {
        Some(entry) => {
            [entry.ebx, entry.ecx, entry.edx] = KVM_SIGNATURE;
            entry.eax = entry.eax.max(LEAF_HYPERVISOR + 1);
        }
        None => entries.push(kvm_cpuid_entry2 {
            function: LEAF_HYPERVISOR,
            eax: LEAF_HYPERVISOR + 1,
            ebx: KVM_SIGNATURE[0],
            ecx: KVM_SIGNATURE[1],
            edx: KVM_SIGNATURE[2],
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{find, intel_host};
    use super::*;

    #[test]
    fn apic_ids_and_logical_count() {
        for (id, count) in [(0u8, 1u8), (3, 4), (200, 254)] {
            let mut entries = intel_host();
            normalize(&mut entries, id, count);
            let leaf1 = find(&entries, 1, 0);
            assert_eq!(leaf1.ebx >> 24, u32::from(id));
            assert_eq!((leaf1.ebx >> 16) & 0xff, u32::from(count));
            assert_eq!(leaf1.ebx & 0xffff, 0x0800, "CLFLUSH size kept");
            assert_eq!(leaf1.edx & FEATURES_EDX_HTT != 0, count > 1);
            assert_ne!(leaf1.ecx & FEATURES_ECX_HYPERVISOR, 0);
        }
    }

    #[test]
    fn topology_is_one_core_per_vcpu() {
        let mut entries = intel_host();
        normalize(&mut entries, 2, 4);
        for leaf in [0xb, 0x1f] {
            let smt = find(&entries, leaf, 0);
            let core = find(&entries, leaf, 1);
            let end = find(&entries, leaf, 2);
            assert_eq!((smt.eax, smt.ebx, smt.ecx >> 8, smt.edx), (0, 1, 1, 2));
            assert_eq!((core.eax, core.ebx, core.ecx >> 8, core.edx), (2, 4, 2, 2));
            assert_eq!((end.ebx, end.ecx >> 8), (0, 0));
            assert_eq!(entries.iter().filter(|e| e.function == leaf).count(), 3);
        }
        let mut three = intel_host();
        normalize(&mut three, 0, 3);
        assert_eq!(
            find(&three, 0xb, 1).eax,
            2,
            "3 cores need 2 bits of APIC ID"
        );
    }

    #[test]
    fn cache_sharing_matches_vcpu_count() {
        let mut entries = intel_host();
        normalize(&mut entries, 0, 4);
        let l1 = find(&entries, 4, 0);
        let l3 = find(&entries, 4, 3);
        assert_eq!(l1.eax >> 26, 3);
        assert_eq!((l1.eax >> 14) & 0xfff, 0);
        assert_eq!((l3.eax >> 14) & 0xfff, 3);
        assert_eq!(l3.eax & 0x3fff, 0x0163, "cache type and level kept");
    }

    #[test]
    fn hypervisor_leaf_is_kvm() {
        let mut entries = intel_host();
        entries.retain(|e| e.function != LEAF_HYPERVISOR);
        normalize(&mut entries, 0, 1);
        let leaf = find(&entries, LEAF_HYPERVISOR, 0);
        let mut signature = Vec::new();
        for reg in [leaf.ebx, leaf.ecx, leaf.edx] {
            signature.extend_from_slice(&reg.to_le_bytes());
        }
        assert_eq!(&signature, b"KVMKVMKVM\0\0\0");
        assert!(leaf.eax > LEAF_HYPERVISOR);
    }
}
