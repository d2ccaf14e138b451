//! The CPUID a vCPU sees: KVM's supported set, normalised for our topology (`normalize`), then
//! filtered by a named CPU template (`template`).

mod normalize;
mod template;

pub use normalize::normalize;
pub use template::{apply_template, CpuTemplate};

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    #[error("cannot build the CPUID table: {0:?}")]
    Fam(vmm_sys_util::fam::Error),
}

/// Which register of a CPUID entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

pub(crate) fn reg_mut(entry: &mut kvm_cpuid_entry2, reg: Reg) -> &mut u32 {
    match reg {
        Reg::Eax => &mut entry.eax,
        Reg::Ebx => &mut entry.ebx,
        Reg::Ecx => &mut entry.ecx,
        Reg::Edx => &mut entry.edx,
    }
}

/// Feature bits a vCPU reports although the CPUID we set had them clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForcedBits {
    pub function: u32,
    pub index: u32,
    pub reg: Reg,
    pub bits: u32,
}

/// Compares the CPUID we set with what KVM reports back for the vCPU. Some KVM flavours
/// override leaves: PVM, for one, passes the host's bits of leaves 1, 7 and 0xd through,
/// because its guests run on the host CPU. A template cannot hide those; the kernel command
/// line can (`noxsave`, `clearcpuid=`).
pub fn forced_bits(wanted: &[kvm_cpuid_entry2], actual: &[kvm_cpuid_entry2]) -> Vec<ForcedBits> {
    let mut forced = Vec::new();
    for want in wanted {
        let Some(got) = actual
            .iter()
            .find(|g| g.function == want.function && g.index == want.index)
        else {
            continue;
        };
        for (reg, w, g) in [
            (Reg::Ebx, want.ebx, got.ebx),
            (Reg::Ecx, want.ecx, got.ecx),
            (Reg::Edx, want.edx, got.edx),
        ] {
            if g & !w != 0 {
                forced.push(ForcedBits {
                    function: want.function,
                    index: want.index,
                    reg,
                    bits: g & !w,
                });
            }
        }
    }
    forced
}

/// The CPUID for vCPU `vcpu_id` of `num_vcpus`, from KVM's supported set.
pub fn vcpu_cpuid(
    supported: &CpuId,
    vcpu_id: u8,
    num_vcpus: u8,
    template: CpuTemplate,
) -> Result<CpuId, CpuidError> {
    let mut entries = supported.as_slice().to_vec();
    normalize(&mut entries, vcpu_id, num_vcpus);
    apply_template(&mut entries, template);
    CpuId::from_entries(&entries).map_err(CpuidError::Fam)
}

#[cfg(test)]
mod tests {
    use super::test_support::{entry, intel_host};
    use super::*;

    #[test]
    fn reports_only_bits_kvm_added() {
        let wanted = vec![
            entry(1, 0, [1, 2, 0x8020_0000, 0xff]),
            entry(7, 0, [0, 0, 0, 0]),
        ];
        let mut actual = wanted.clone();
        assert!(forced_bits(&wanted, &actual).is_empty());
        actual[0].ecx = 0x8420_0000; // xsave forced on
        actual[0].edx = 0x0f; // bits cleared by KVM are not our problem
        actual[1].ebx = 0x80;
        assert_eq!(
            forced_bits(&wanted, &actual),
            vec![
                ForcedBits {
                    function: 1,
                    index: 0,
                    reg: Reg::Ecx,
                    bits: 0x0400_0000
                },
                ForcedBits {
                    function: 7,
                    index: 0,
                    reg: Reg::Ebx,
                    bits: 0x80
                },
            ]
        );
        assert!(forced_bits(&intel_host(), &[]).is_empty());
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

    pub fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            flags: if index > 0 {
                KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            } else {
                0
            },
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    pub fn find(entries: &[kvm_cpuid_entry2], function: u32, index: u32) -> kvm_cpuid_entry2 {
        *entries
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap_or_else(|| panic!("no leaf {function:#x}.{index}"))
    }

    /// A trimmed copy of what KVM reports on an Intel host with AVX-512 and XSAVE.
    pub fn intel_host() -> Vec<kvm_cpuid_entry2> {
        vec![
            entry(0, 0, [0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]), // GenuineIntel
            entry(1, 0, [0x806f8, 0x0008_0800, 0xfffa_3223, 0x178b_fbff]),
            entry(4, 0, [0x1c00_4121, 0x02c0_003f, 0x3f, 0]),
            entry(4, 1, [0x1c00_4122, 0x01c0_003f, 0x3f, 0]),
            entry(4, 3, [0x1c03_c163, 0x03c0_003f, 0xbfff, 4]),
            entry(7, 0, [1, 0xf1bf_fbfb, 0x1b41_5f6e, 0xfd01_4410]),
            entry(0xa, 0, [0x0804_0602, 0, 0, 0x603]),
            entry(0xb, 0, [1, 2, 0x100, 7]),
            entry(0xb, 1, [7, 64, 0x201, 7]),
            entry(0xd, 0, [0x602e7, 0x2988, 0x2988, 0]),
            entry(0xd, 1, [0xf, 0x2988, 0, 0]),
            entry(0x1f, 0, [1, 2, 0x100, 7]),
            entry(
                0x4000_0000,
                0,
                [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d],
            ),
            entry(0x8000_0000, 0, [0x8000_0008, 0, 0, 0]),
            entry(0x8000_0001, 0, [0, 0, 0x121, 0x2c10_0800]),
            entry(0x8000_0008, 0, [0x3930, 0, 0, 0]),
        ]
    }
}
