//! What the architecture says an instruction does when KVM's instruction emulator could not run
//! it. Where the guest's own CPU state makes the outcome an exception (`int3` raises #BP; an
//! instruction whose feature CPUID hides, or whose enabling CR4 bit is clear, raises #UD), the
//! VMM can deliver that exception and the guest continues exactly as on real hardware. Where the
//! instruction would execute, nothing can be done without faking its effect: the guest stops.

use std::fmt;

use kvm_bindings::kvm_cpuid_entry2;

use super::cpuid::Reg;
use super::insn::{Instruction, Mnemonic, Operand};

pub const BP_VECTOR: u8 = 3;
pub const UD_VECTOR: u8 = 6;
pub const NM_VECTOR: u8 = 7;
pub const MF_VECTOR: u8 = 16;

const CR0_MP: u64 = 1 << 1;
const CR0_TS: u64 = 1 << 3;
const CR0_NE: u64 = 1 << 5;
/// FSW.ES: an unmasked x87 exception is pending.
const FSW_ES: u16 = 1 << 7;

const CR4_FSGSBASE: u64 = 1 << 16;
const CR4_OSXSAVE: u64 = 1 << 18;

/// One CPUID feature flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidFlag {
    pub name: &'static str,
    pub leaf: u32,
    pub subleaf: u32,
    pub reg: Reg,
    pub bit: u8,
}

const fn flag(name: &'static str, leaf: u32, subleaf: u32, reg: Reg, bit: u8) -> CpuidFlag {
    CpuidFlag {
        name,
        leaf,
        subleaf,
        reg,
        bit,
    }
}

const CX8: CpuidFlag = flag("cx8", 1, 0, Reg::Edx, 8);
const CX16: CpuidFlag = flag("cx16", 1, 0, Reg::Ecx, 13);
const XSAVE: CpuidFlag = flag("xsave", 1, 0, Reg::Ecx, 26);
const RDRAND: CpuidFlag = flag("rdrand", 1, 0, Reg::Ecx, 30);
const RDSEED: CpuidFlag = flag("rdseed", 7, 0, Reg::Ebx, 18);
const RDPID: CpuidFlag = flag("rdpid", 7, 0, Reg::Ecx, 22);
const XSAVEOPT: CpuidFlag = flag("xsaveopt", 0xd, 1, Reg::Eax, 0);
const XSAVEC: CpuidFlag = flag("xsavec", 0xd, 1, Reg::Eax, 1);
const XSAVES: CpuidFlag = flag("xsaves", 0xd, 1, Reg::Eax, 3);
const POPCNT: CpuidFlag = flag("popcnt", 1, 0, Reg::Ecx, 23);
const FSGSBASE: CpuidFlag = flag("fsgsbase", 7, 0, Reg::Ebx, 0);
const SMAP: CpuidFlag = flag("smap", 7, 0, Reg::Ebx, 20);
const RDTSCP: CpuidFlag = flag("rdtscp", 0x8000_0001, 0, Reg::Edx, 27);

/// A condition an instruction needs to execute instead of raising #UD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement {
    Cpuid(CpuidFlag),
    Cr4 { name: &'static str, mask: u64 },
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Cpuid(flag) => write!(
                f,
                "CPUID.{:#x}.{}:{:?}.{}[bit {}]",
                flag.leaf, flag.subleaf, flag.reg, flag.name, flag.bit
            ),
            Requirement::Cr4 { name, .. } => write!(f, "CR4.{name}"),
        }
    }
}

const OSXSAVE: Requirement = Requirement::Cr4 {
    name: "OSXSAVE",
    mask: CR4_OSXSAVE,
};

const CR4_FSGSBASE_SET: Requirement = Requirement::Cr4 {
    name: "FSGSBASE",
    mask: CR4_FSGSBASE,
};

/// The #UD conditions of the SDM's description of each instruction (besides LOCK and operand
/// form, which `classify` checks first).
fn requirements(mnemonic: Mnemonic) -> &'static [Requirement] {
    use Requirement::Cpuid;
    match mnemonic {
        Mnemonic::Int3 | Mnemonic::Fwait => &[],
        Mnemonic::Cmpxchg8b => &[Cpuid(CX8)],
        Mnemonic::Cmpxchg16b => &[Cpuid(CX16)],
        Mnemonic::Rdrand => &[Cpuid(RDRAND)],
        Mnemonic::Rdseed => &[Cpuid(RDSEED)],
        Mnemonic::Rdpid => &[Cpuid(RDPID)],
        Mnemonic::Rdtscp => &[Cpuid(RDTSCP)],
        Mnemonic::Xsave | Mnemonic::Xrstor | Mnemonic::Xgetbv | Mnemonic::Xsetbv => {
            &[Cpuid(XSAVE), OSXSAVE]
        }
        Mnemonic::Xsaveopt => &[Cpuid(XSAVE), OSXSAVE, Cpuid(XSAVEOPT)],
        Mnemonic::Xsavec => &[Cpuid(XSAVE), OSXSAVE, Cpuid(XSAVEC)],
        Mnemonic::Xsaves | Mnemonic::Xrstors => &[Cpuid(XSAVE), OSXSAVE, Cpuid(XSAVES)],
        Mnemonic::Clac | Mnemonic::Stac => &[Cpuid(SMAP)],
        Mnemonic::Popcnt => &[Cpuid(POPCNT)],
        Mnemonic::Rdfsbase | Mnemonic::Rdgsbase | Mnemonic::Wrfsbase | Mnemonic::Wrgsbase => {
            &[Cpuid(FSGSBASE), CR4_FSGSBASE_SET]
        }
    }
}

/// The vCPU state an instruction's outcome depends on.
#[derive(Clone, Copy, Debug)]
pub struct GuestCpu<'a> {
    /// The CPUID the guest sees (what KVM reports for the vCPU, not only what the VMM set).
    pub cpuid: &'a [kvm_cpuid_entry2],
    pub cr4: u64,
    pub cr0: u64,
    /// x87 status word (FSW.ES: an unmasked exception is pending).
    pub fsw: u16,
    /// Current privilege level.
    pub cpl: u8,
}

impl GuestCpu<'_> {
    fn has(&self, flag: &CpuidFlag) -> bool {
        // A leaf KVM does not list reads as zeros: the feature is absent.
        self.cpuid
            .iter()
            .find(|e| e.function == flag.leaf && e.index == flag.subleaf)
            .map(|e| match flag.reg {
                Reg::Eax => e.eax,
                Reg::Ebx => e.ebx,
                Reg::Ecx => e.ecx,
                Reg::Edx => e.edx,
            })
            .is_some_and(|value| value & (1 << flag.bit) != 0)
    }

    fn meets(&self, requirement: &Requirement) -> bool {
        match requirement {
            Requirement::Cpuid(flag) => self.has(flag),
            Requirement::Cr4 { mask, .. } => self.cr4 & mask != 0,
        }
    }
}

/// Why an instruction raises #UD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdCause {
    /// LOCK on an instruction that cannot be locked.
    LockPrefix,
    /// A register where the instruction only takes memory.
    RegisterOperand,
    /// A feature CPUID hides or a CR4 bit that is clear.
    Unmet(Requirement),
}

impl fmt::Display for UdCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UdCause::LockPrefix => {
                f.write_str("LOCK prefix on an instruction that cannot be locked")
            }
            UdCause::RegisterOperand => f.write_str("register operand where only memory is valid"),
            UdCause::Unmet(requirement @ Requirement::Cpuid(_)) => {
                write!(f, "{requirement} is 0 for this vCPU")
            }
            UdCause::Unmet(requirement) => write!(f, "{requirement} is clear"),
        }
    }
}

/// The architectural outcome of an instruction the emulator failed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A trap: `vector` is delivered with RIP past the instruction (`len` bytes on).
    Trap { vector: u8, len: usize },
    /// #UD, a fault: delivered with RIP on the instruction.
    InvalidOpcode(UdCause),
    /// Another fault: `vector` is delivered with RIP on the instruction.
    Fault { vector: u8, cause: &'static str },
    /// The instruction completes, and on this vCPU its whole architectural effect is the next
    /// RIP (`fwait` with no x87 exception pending): RIP moves `len` bytes on. Nothing is skipped:
    /// there is nothing else for it to do.
    NoEffect { len: usize },
    /// No exception to deliver: on this vCPU the instruction would execute (only a real CPU can
    /// do that), or its delivery depends on more than this module checks.
    NotReflectable(String),
}

fn lockable(mnemonic: Mnemonic) -> bool {
    matches!(mnemonic, Mnemonic::Cmpxchg8b | Mnemonic::Cmpxchg16b)
}

fn memory_only(mnemonic: Mnemonic) -> bool {
    !matches!(
        mnemonic,
        Mnemonic::Int3
            | Mnemonic::Rdrand
            | Mnemonic::Rdseed
            | Mnemonic::Rdpid
            | Mnemonic::Rdtscp
            | Mnemonic::Xgetbv
            | Mnemonic::Xsetbv
            | Mnemonic::Clac
            | Mnemonic::Stac
            | Mnemonic::Popcnt
            | Mnemonic::Rdfsbase
            | Mnemonic::Rdgsbase
            | Mnemonic::Wrfsbase
            | Mnemonic::Wrgsbase
            | Mnemonic::Fwait
    )
}

/// What `insn` does on `cpu`.
pub fn classify(insn: &Instruction, cpu: &GuestCpu) -> Outcome {
    let mnemonic = insn.mnemonic;
    if insn.prefixes.lock && !(lockable(mnemonic) && insn.operand == Operand::Memory) {
        return Outcome::InvalidOpcode(UdCause::LockPrefix);
    }
    if memory_only(mnemonic) && insn.operand == Operand::Register {
        return Outcome::InvalidOpcode(UdCause::RegisterOperand);
    }
    if let Some(unmet) = requirements(mnemonic).iter().find(|r| !cpu.meets(r)) {
        return Outcome::InvalidOpcode(UdCause::Unmet(*unmet));
    }
    if mnemonic == Mnemonic::Fwait {
        // SDM WAIT/FWAIT: #NM if CR0.MP and CR0.TS; #MF if an unmasked x87 exception is
        // pending (CR0.NE=1); otherwise it completes with no effect but the next RIP.
        if cpu.cr0 & (CR0_MP | CR0_TS) == CR0_MP | CR0_TS {
            return Outcome::Fault {
                vector: NM_VECTOR,
                cause: "CR0.MP and CR0.TS are set",
            };
        }
        if cpu.fsw & FSW_ES != 0 {
            if cpu.cr0 & CR0_NE != 0 {
                return Outcome::Fault {
                    vector: MF_VECTOR,
                    cause: "an unmasked x87 exception is pending (FSW.ES)",
                };
            }
            return Outcome::NotReflectable(
                "fwait with an x87 exception pending and CR0.NE clear (reported through FERR#)"
                    .into(),
            );
        }
        return Outcome::NoEffect { len: insn.len };
    }
    if mnemonic == Mnemonic::Int3 {
        if cpu.cpl != 0 {
            // Outside ring 0 delivery depends on the IDT gate's DPL; KVM handles (or injects)
            // those itself and never asks us.
            return Outcome::NotReflectable(format!("int3 at CPL {}", cpu.cpl));
        }
        return Outcome::Trap {
            vector: BP_VECTOR,
            len: insn.len,
        };
    }
    let needs: Vec<String> = requirements(mnemonic)
        .iter()
        .map(|r| r.to_string())
        .collect();
    Outcome::NotReflectable(if needs.is_empty() {
        format!("{mnemonic} is valid here")
    } else {
        format!("{mnemonic} is valid here: {} all set", needs.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::insn::{decode, CodeMode};

    fn entry(leaf: u32, subleaf: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function: leaf,
            index: subleaf,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    /// Everything on: cx8, cx16, xsave, rdrand, rdseed, rdpid, xsaveopt/c/s, rdtscp.
    fn full_cpuid() -> Vec<kvm_cpuid_entry2> {
        vec![
            entry(1, 0, [0, 0, 1 << 13 | 1 << 26 | 1 << 30, 1 << 8]),
            entry(7, 0, [0, 1 << 18, 1 << 22, 0]),
            entry(0xd, 1, [0b1011, 0, 0, 0]),
            entry(0x8000_0001, 0, [0, 0, 0, 1 << 27]),
        ]
    }

    /// The conservative template: cx8 only.
    fn conservative_cpuid() -> Vec<kvm_cpuid_entry2> {
        vec![
            entry(1, 0, [0, 0, 0, 1 << 8]),
            entry(7, 0, [0; 4]),
            entry(0xd, 1, [0; 4]),
            entry(0x8000_0001, 0, [0; 4]),
        ]
    }

    fn outcome(bytes: &[u8], cpuid: &[kvm_cpuid_entry2], cr4: u64) -> Outcome {
        let insn = decode(bytes, CodeMode::Bits64).unwrap();
        classify(
            &insn,
            &GuestCpu {
                cpuid,
                cr4,
                cr0: 0,
                fsw: 0,
                cpl: 0,
            },
        )
    }

    fn unmet(name: &str) -> impl Fn(&Outcome) -> bool + '_ {
        move |o| match o {
            Outcome::InvalidOpcode(UdCause::Unmet(Requirement::Cpuid(flag))) => flag.name == name,
            Outcome::InvalidOpcode(UdCause::Unmet(Requirement::Cr4 { name: n, .. })) => *n == name,
            _ => false,
        }
    }

    #[test]
    fn int3_in_ring0_is_a_bp_trap_past_the_instruction() {
        let cpuid = conservative_cpuid();
        assert_eq!(
            outcome(&[0xcc], &cpuid, 0),
            Outcome::Trap {
                vector: BP_VECTOR,
                len: 1
            }
        );
        assert_eq!(
            outcome(&[0x3e, 0xcc], &cpuid, 0),
            Outcome::Trap {
                vector: BP_VECTOR,
                len: 2
            }
        );
        assert_eq!(
            outcome(&[0xf0, 0xcc], &cpuid, 0),
            Outcome::InvalidOpcode(UdCause::LockPrefix)
        );
        let insn = decode(&[0xcc], CodeMode::Bits64).unwrap();
        let ring3 = GuestCpu {
            cpuid: &cpuid,
            cr4: 0,
            cr0: 0,
            fsw: 0,
            cpl: 3,
        };
        assert!(matches!(
            classify(&insn, &ring3),
            Outcome::NotReflectable(_)
        ));
    }

    #[test]
    fn hidden_cx16_makes_cmpxchg16b_ud() {
        let lock_cmpxchg16b = [0xf0, 0x48, 0x0f, 0xc7, 0x0f];
        assert!(unmet("cx16")(&outcome(
            &lock_cmpxchg16b,
            &conservative_cpuid(),
            0
        )));
        let visible = outcome(&lock_cmpxchg16b, &full_cpuid(), 0);
        assert!(
            matches!(&visible, Outcome::NotReflectable(why) if why.contains("cx16")),
            "{visible:?}"
        );
        // cx8 is in every template: cmpxchg8b would execute.
        assert!(matches!(
            outcome(&[0xf0, 0x0f, 0xc7, 0x0f], &conservative_cpuid(), 0),
            Outcome::NotReflectable(_)
        ));
        // Register form: #UD whatever CPUID says.
        assert_eq!(
            outcome(&[0x48, 0x0f, 0xc7, 0xc9], &full_cpuid(), 0),
            Outcome::InvalidOpcode(UdCause::RegisterOperand)
        );
    }

    #[test]
    fn rdrand_rdseed_rdpid_rdtscp_follow_cpuid() {
        for (bytes, name) in [
            (&[0x0f, 0xc7, 0xf0][..], "rdrand"),
            (&[0x48, 0x0f, 0xc7, 0xf8][..], "rdseed"),
            (&[0xf3, 0x0f, 0xc7, 0xf8][..], "rdpid"),
            (&[0x0f, 0x01, 0xf9][..], "rdtscp"),
        ] {
            assert!(
                unmet(name)(&outcome(bytes, &conservative_cpuid(), 0)),
                "{name}"
            );
            assert!(
                matches!(outcome(bytes, &full_cpuid(), 0), Outcome::NotReflectable(_)),
                "{name}"
            );
            let mut locked = vec![0xf0];
            locked.extend_from_slice(bytes);
            assert_eq!(
                outcome(&locked, &full_cpuid(), 0),
                Outcome::InvalidOpcode(UdCause::LockPrefix)
            );
        }
    }

    #[test]
    fn xsave_family_needs_cpuid_and_cr4_osxsave() {
        let xrstor = [0x0f, 0xae, 0x2c, 0x24];
        let xrstors = [0x48, 0x0f, 0xc7, 0x1f];
        let xgetbv = [0x0f, 0x01, 0xd0];
        for bytes in [&xrstor[..], &xrstors[..], &xgetbv[..]] {
            // Hidden by the template.
            assert!(unmet("xsave")(&outcome(
                bytes,
                &conservative_cpuid(),
                CR4_OSXSAVE
            )));
            // Visible (as PVM forces it) but the kernel never enabled it (noxsave).
            assert!(unmet("OSXSAVE")(&outcome(bytes, &full_cpuid(), 0)));
            // Visible and enabled: it would run.
            assert!(matches!(
                outcome(bytes, &full_cpuid(), CR4_OSXSAVE),
                Outcome::NotReflectable(_)
            ));
        }
        let mut no_xsaves = full_cpuid();
        no_xsaves[2].eax = 0b0001;
        assert!(unmet("xsaves")(&outcome(&xrstors, &no_xsaves, CR4_OSXSAVE)));
        assert!(unmet("xsavec")(&outcome(
            &[0x0f, 0xc7, 0x27],
            &no_xsaves,
            CR4_OSXSAVE
        )));
        assert!(matches!(
            outcome(&[0x0f, 0xae, 0x37], &no_xsaves, CR4_OSXSAVE),
            Outcome::NotReflectable(_)
        ));
        // A missing leaf counts as zeros.
        assert!(unmet("xsaves")(&outcome(
            &xrstors,
            &full_cpuid()[..2],
            CR4_OSXSAVE
        )));
    }

    #[test]
    fn smap_popcnt_and_fsgsbase_follow_cpuid_and_cr4() {
        let mut cpuid = conservative_cpuid();
        for (bytes, name) in [
            (&[0x0f, 0x01, 0xca][..], "smap"),
            (&[0x0f, 0x01, 0xcb][..], "smap"),
            (&[0xf3, 0x48, 0x0f, 0xb8, 0xc1][..], "popcnt"),
            (&[0xf3, 0x48, 0x0f, 0xae, 0xc8][..], "fsgsbase"),
        ] {
            assert!(unmet(name)(&outcome(bytes, &cpuid, 1 << 16)), "{name}");
        }
        // PVM shows the host's leaf 7: clac is then valid and cannot be reflected.
        cpuid[1].ebx = 1 << 20 | 1;
        assert!(matches!(
            outcome(&[0x0f, 0x01, 0xca], &cpuid, 0),
            Outcome::NotReflectable(_)
        ));
        let rdgsbase = [0xf3, 0x48, 0x0f, 0xae, 0xc8];
        assert!(unmet("FSGSBASE")(&outcome(&rdgsbase, &cpuid, 0)));
        assert!(matches!(
            outcome(&rdgsbase, &cpuid, CR4_FSGSBASE),
            Outcome::NotReflectable(_)
        ));
    }

    #[test]
    fn fwait_waits_for_nothing_or_raises_nm_or_mf() {
        let cpuid = conservative_cpuid();
        let insn = decode(&[0x9b], CodeMode::Bits64).unwrap();
        let cpu = |cr0, fsw| GuestCpu {
            cpuid: &cpuid,
            cr4: 0,
            cr0,
            fsw,
            cpl: 0,
        };
        // Linux: CR0 = PG|WP|NE|ET|MP|PE, nothing pending.
        let linux_cr0 = 0x8005_0033;
        assert_eq!(
            classify(&insn, &cpu(linux_cr0, 0)),
            Outcome::NoEffect { len: 1 }
        );
        assert!(matches!(
            classify(&insn, &cpu(linux_cr0 | CR0_TS, 0)),
            Outcome::Fault {
                vector: NM_VECTOR,
                ..
            }
        ));
        // TS without MP: fwait does not fault.
        assert_eq!(
            classify(&insn, &cpu(CR0_TS, 0)),
            Outcome::NoEffect { len: 1 }
        );
        assert!(matches!(
            classify(&insn, &cpu(linux_cr0, FSW_ES | 1)),
            Outcome::Fault {
                vector: MF_VECTOR,
                ..
            }
        ));
        assert!(matches!(
            classify(&insn, &cpu(linux_cr0 & !CR0_NE, FSW_ES | 1)),
            Outcome::NotReflectable(_)
        ));
        let locked = decode(&[0xf0, 0x9b], CodeMode::Bits64).unwrap();
        assert_eq!(
            classify(&locked, &cpu(linux_cr0, 0)),
            Outcome::InvalidOpcode(UdCause::LockPrefix)
        );
    }

    #[test]
    fn causes_read_well() {
        let cause = UdCause::Unmet(Requirement::Cpuid(CX16));
        assert_eq!(
            cause.to_string(),
            "CPUID.0x1.0:Ecx.cx16[bit 13] is 0 for this vCPU"
        );
        assert_eq!(UdCause::Unmet(OSXSAVE).to_string(), "CR4.OSXSAVE is clear");
    }
}
