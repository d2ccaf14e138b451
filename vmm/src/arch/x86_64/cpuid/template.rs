//! Named CPU templates. docs/cpu-templates.md describes each one and why.

use kvm_bindings::kvm_cpuid_entry2;

use super::{reg_mut, Reg};

pub use vmm_config::CpuTemplate;

/// Bits the conservative template keeps in a register; every other bit is cleared.
struct KeepMask {
    leaf: u32,
    reg: Reg,
    keep: u32,
}

const fn bits(list: &[u32]) -> u32 {
    let mut mask = 0;
    let mut i = 0;
    while i < list.len() {
        mask |= 1 << list[i];
        i += 1;
    }
    mask
}

/// Leaf 1 EDX: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush
/// mmx fxsr sse sse2 htt.
const LEAF1_EDX_KEEP: u32 = bits(&[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 19, 23, 24, 25, 26, 28,
]);
/// Leaf 1 ECX: sse3, x2apic (APIC access through MSRs, which trap instead of being emulated),
/// hypervisor. Gone: cx16, xsave, osxsave, avx, f16c, fma, pcid, rdrand, movbe, popcnt,
/// sse4.x, ssse3, aes, pclmulqdq, tsc-deadline, monitor, vmx.
const LEAF1_ECX_KEEP: u32 = bits(&[0, 21, 31]);
/// Leaf 0x8000_0001 EDX: syscall, nx, lm. Gone: pdpe1gb, rdtscp.
const EXT1_EDX_KEEP: u32 = bits(&[11, 20, 29]);
/// Leaf 0x8000_0001 ECX: lahf_lm. Gone: abm/lzcnt, prefetchw, svm.
const EXT1_ECX_KEEP: u32 = bits(&[0]);

const CONSERVATIVE_MASKS: [KeepMask; 4] = [
    KeepMask {
        leaf: 1,
        reg: Reg::Edx,
        keep: LEAF1_EDX_KEEP,
    },
    KeepMask {
        leaf: 1,
        reg: Reg::Ecx,
        keep: LEAF1_ECX_KEEP,
    },
    KeepMask {
        leaf: 0x8000_0001,
        reg: Reg::Edx,
        keep: EXT1_EDX_KEEP,
    },
    KeepMask {
        leaf: 0x8000_0001,
        reg: Reg::Ecx,
        keep: EXT1_ECX_KEEP,
    },
];

/// Leaves the conservative template empties completely (all sub-leaves):
/// 7 structured extended features (avx2, avx512*, smep, smap, umip, pku, la57, invpcid, rdseed,
/// fsgsbase, erms, ...), 0xa PMU, 0xd XSAVE state, 0x12 SGX, 0x14 processor trace,
/// 0x19 key locker, 0x1d/0x1e AMX tiles, 0x24 AVX10.
const CONSERVATIVE_EMPTY_LEAVES: [u32; 8] = [0x7, 0xa, 0xd, 0x12, 0x14, 0x19, 0x1d, 0x1e];
const LEAF_AVX10: u32 = 0x24;

/// Applies `template` to normalised CPUID entries.
pub fn apply_template(entries: &mut [kvm_cpuid_entry2], template: CpuTemplate) {
    if template == CpuTemplate::Host {
        return;
    }
    for entry in entries.iter_mut() {
        let leaf = entry.function;
        for mask in CONSERVATIVE_MASKS.iter().filter(|m| m.leaf == leaf) {
            *reg_mut(entry, mask.reg) &= mask.keep;
        }
        if CONSERVATIVE_EMPTY_LEAVES.contains(&entry.function) || entry.function == LEAF_AVX10 {
            entry.eax = 0;
            entry.ebx = 0;
            entry.ecx = 0;
            entry.edx = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::normalize;
    use super::super::test_support::{find, intel_host};
    use super::*;

    const CX16: u32 = 1 << 13;
    const XSAVE: u32 = 1 << 26;
    const AVX: u32 = 1 << 28;
    const FMA: u32 = 1 << 12;
    const PCID: u32 = 1 << 17;
    const RDRAND: u32 = 1 << 30;
    const X2APIC: u32 = 1 << 21;
    const HYPERVISOR: u32 = 1 << 31;

    fn conservative() -> Vec<kvm_cpuid_entry2> {
        let mut entries = intel_host();
        normalize(&mut entries, 1, 2);
        apply_template(&mut entries, CpuTemplate::Conservative);
        entries
    }

    #[test]
    fn conservative_hides_what_emulation_cannot_run() {
        let entries = conservative();
        let leaf1 = find(&entries, 1, 0);
        for (bit, name) in [
            (CX16, "cx16"),
            (XSAVE, "xsave"),
            (AVX, "avx"),
            (FMA, "fma"),
            (PCID, "pcid"),
            (RDRAND, "rdrand"),
        ] {
            assert_eq!(leaf1.ecx & bit, 0, "{name} still visible");
        }
        let leaf7 = find(&entries, 7, 0);
        assert_eq!((leaf7.eax, leaf7.ebx, leaf7.ecx, leaf7.edx), (0, 0, 0, 0));
        for index in [0, 1] {
            let xsave = find(&entries, 0xd, index);
            assert_eq!((xsave.eax, xsave.ebx, xsave.ecx, xsave.edx), (0, 0, 0, 0));
        }
        let ext = find(&entries, 0x8000_0001, 0);
        assert_eq!(
            ext.edx & (1 << 26 | 1 << 27),
            0,
            "pdpe1gb and rdtscp hidden"
        );
    }

    #[test]
    fn conservative_keeps_the_x86_64_baseline_and_topology() {
        let entries = conservative();
        let leaf1 = find(&entries, 1, 0);
        assert_eq!(
            leaf1.edx & LEAF1_EDX_KEEP,
            LEAF1_EDX_KEEP & 0x178b_fbff | 1 << 28
        );
        assert_ne!(leaf1.ecx & X2APIC, 0);
        assert_ne!(leaf1.ecx & HYPERVISOR, 0);
        assert_eq!(leaf1.ebx >> 24, 1, "APIC ID survives the template");
        let ext = find(&entries, 0x8000_0001, 0);
        assert_ne!(ext.edx & (1 << 29), 0, "long mode");
        assert_ne!(ext.edx & (1 << 20), 0, "nx");
        assert_eq!(find(&entries, 0xb, 1).ebx, 2);
    }

    #[test]
    fn host_template_changes_nothing() {
        let mut entries = intel_host();
        normalize(&mut entries, 0, 1);
        let before = entries.clone();
        apply_template(&mut entries, CpuTemplate::Host);
        assert_eq!(entries, before);
        assert_ne!(find(&entries, 1, 0).ecx & AVX, 0);
    }
}
