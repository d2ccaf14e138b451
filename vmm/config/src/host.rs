//! What kind of KVM this host has, and what a guest kernel needs because of it.
//!
//! On an instruction-emulating host (PVM running a guest kernel that is not PVM-aware) guest
//! ring 0 runs through KVM's instruction emulator: slowly, and without some instructions. The
//! VMM then reflects the emulator's failures as the exceptions the architecture defines, and the
//! guest kernel needs [`EMULATING_HOST_CMDLINE`] (docs/pvm-host-boot.md). Hardware KVM (vmx/svm)
//! needs neither. This one rule is what the VMM, the sandbox and `rust-vm check` apply.

use std::fmt;
use std::path::Path;

/// Kernel command-line words for our guest kernel on an instruction-emulating host
/// (docs/pvm-host-boot.md, "The tactics"): no XSAVE family, SMAP/SMEP (`clac`/`stac`) or
/// `popcnt` (PVM forces their CPUID bits on whatever the CPU template says; the emulator lacks
/// the instructions), and our kernel's `syscall` fix-up for the host's `syscall` defect (patch
/// 0002). `clearcpuid=xsave` rather than `noxsave`: the kernel honours both, but reports
/// `noxsave` as unknown and passes it to `/init` as an argument.
pub const EMULATING_HOST_CMDLINE: &str = "clearcpuid=xsave,smap,smep,popcnt syscall_pf_fixup";

/// How this host's KVM runs a guest kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// Hardware virtualization: the CPU has this flag (`vmx` or `svm`) and no PVM module is
    /// loaded.
    Hardware { flag: &'static str },
    /// The `kvm_pvm` module is loaded: `/dev/kvm` is PVM, which emulates the ring 0 of a guest
    /// kernel that is not PVM-aware (ours), whatever the CPU flags say.
    Pvm,
    /// Neither vmx nor svm, and no PVM module: whatever provides `/dev/kvm` (if anything) cannot
    /// run guest ring 0 natively.
    NoHardwareVirtualization,
    /// No CPU flags to go on (not x86, or `/proc/cpuinfo` unreadable): taken as hardware.
    Unknown,
}

impl HostKind {
    /// This host, from `/sys/module/kvm_pvm` and the CPU flags in `/proc/cpuinfo`.
    pub fn detect() -> HostKind {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        HostKind::from_facts(Path::new("/sys/module/kvm_pvm").exists(), &cpuinfo)
    }

    /// The rule itself: a loaded PVM module wins over the CPU flags (a PVM host's CPU may well
    /// show vmx; its `/dev/kvm` is still PVM).
    pub fn from_facts(pvm_module: bool, cpuinfo: &str) -> HostKind {
        if pvm_module {
            return HostKind::Pvm;
        }
        let Some(flags) = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("flags")?.split_once(':').map(|(_, f)| f))
        else {
            return HostKind::Unknown;
        };
        match flags
            .split_whitespace()
            .find(|f| *f == "vmx" || *f == "svm")
        {
            Some("vmx") => HostKind::Hardware { flag: "vmx" },
            Some(_) => HostKind::Hardware { flag: "svm" },
            None => HostKind::NoHardwareVirtualization,
        }
    }

    /// Whether guest ring 0 of our (not PVM-aware) guest kernel runs in KVM's instruction
    /// emulator here.
    pub fn emulates_guest_ring0(&self) -> bool {
        matches!(self, HostKind::Pvm | HostKind::NoHardwareVirtualization)
    }
}

impl fmt::Display for HostKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostKind::Hardware { flag } => write!(f, "hardware virtualization ({flag})"),
            HostKind::Pvm => {
                f.write_str("instruction-emulating host: the kvm_pvm module is loaded")
            }
            HostKind::NoHardwareVirtualization => {
                f.write_str("instruction-emulating host: the host CPU has neither vmx nor svm")
            }
            HostKind::Unknown => f.write_str("hardware virtualization assumed (no CPU flags)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMX: &str = "processor\t: 0\nflags\t\t: fpu vme vmx sse2\n";
    const PLAIN: &str = "processor\t: 0\nflags\t\t: fpu vme sse2 hypervisor\n";

    #[test]
    fn the_pvm_module_wins_over_the_cpu_flags() {
        assert_eq!(HostKind::from_facts(true, VMX), HostKind::Pvm);
        assert!(HostKind::from_facts(true, VMX).emulates_guest_ring0());
    }

    #[test]
    fn cpu_flags_decide_without_pvm() {
        assert_eq!(
            HostKind::from_facts(false, VMX),
            HostKind::Hardware { flag: "vmx" }
        );
        assert_eq!(
            HostKind::from_facts(false, &VMX.replace("vmx", "svm")),
            HostKind::Hardware { flag: "svm" }
        );
        let plain = HostKind::from_facts(false, PLAIN);
        assert_eq!(plain, HostKind::NoHardwareVirtualization);
        assert!(plain.emulates_guest_ring0());
        assert!(plain.to_string().contains("neither vmx nor svm"));
        let unknown = HostKind::from_facts(false, "");
        assert_eq!(unknown, HostKind::Unknown);
        assert!(!unknown.emulates_guest_ring0());
    }
}
