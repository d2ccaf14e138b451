//! What kind of KVM this host has, and what the guest needs because of it.
//!
//! On an instruction-emulating host (PVM with a guest kernel that is not PVM-aware) guest ring 0
//! runs through KVM's instruction emulator: slow, and missing some instructions. The guest kernel
//! then needs the command-line options of docs/pvm-host-boot.md, and booting to the agent takes
//! tens of seconds instead of well under one. Hardware KVM (vmx/svm) needs none of it.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Kernel command-line options for a guest kernel whose ring 0 is instruction-emulated
/// (docs/pvm-host-boot.md, "The tactics"): no XSAVE family, SMAP/SMEP (`clac`/`stac`) or
/// `popcnt` (PVM forces their CPUID bits on whatever the template says; the emulator lacks the
/// instructions), and our kernel's `syscall` fix-up for the host's `syscall` defect (patch 0002).
/// `clearcpuid=xsave` rather than `noxsave`: the kernel honours both, but reports `noxsave` as
/// unknown and passes it to `/init` as an argument.
pub const EMULATING_HOST_CMDLINE: &str = "clearcpuid=xsave,smap,smep,popcnt syscall_pf_fixup";

/// Default agent timeout on an instruction-emulating host: the agent listens after ~35 s on an
/// idle 2-core host; this leaves room for a loaded one.
pub const EMULATING_HOST_AGENT_TIMEOUT: Duration = Duration::from_secs(180);
/// Default agent timeout with hardware virtualization, where the guest boots in well under 1 s.
pub const HARDWARE_AGENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether sandboxes get the emulating-host options (`emulation_workarounds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Workarounds {
    /// When [`detect_emulating_host`] says so.
    #[default]
    Auto,
    On,
    Off,
}

impl Workarounds {
    pub fn as_str(self) -> &'static str {
        match self {
            Workarounds::Auto => "auto",
            Workarounds::On => "on",
            Workarounds::Off => "off",
        }
    }

    /// Whether they apply on this host, and why.
    pub fn resolve(self) -> (bool, String) {
        match self {
            Workarounds::On => (true, "asked for (emulation_workarounds = \"on\")".into()),
            Workarounds::Off => (false, "turned off (emulation_workarounds = \"off\")".into()),
            Workarounds::Auto => match detect_emulating_host() {
                Some(why) => (true, format!("instruction-emulating host: {why}")),
                None => (false, "hardware virtualization (vmx/svm)".into()),
            },
        }
    }
}

impl fmt::Display for Workarounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Workarounds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Workarounds::Auto),
            "on" => Ok(Workarounds::On),
            "off" => Ok(Workarounds::Off),
            other => Err(format!(
                "unknown emulation_workarounds {other:?} (expected auto, on or off)"
            )),
        }
    }
}

/// Why this host's KVM is taken to run guest ring 0 through its instruction emulator, or `None`
/// for hardware virtualization. The same rule as the VMM's reflection (`auto`): the PVM module is
/// loaded, or the CPU flags have neither `vmx` nor `svm`.
pub fn detect_emulating_host() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    emulating_host(Path::new("/sys/module/kvm_pvm").exists(), &cpuinfo)
}

fn emulating_host(pvm_module: bool, cpuinfo: &str) -> Option<String> {
    if pvm_module {
        return Some("the kvm_pvm module is loaded".into());
    }
    let flags = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("flags")?.split_once(':').map(|(_, f)| f))?;
    let hardware = flags.split_whitespace().any(|f| f == "vmx" || f == "svm");
    (!hardware).then(|| "the host CPU has neither vmx nor svm".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_follows_the_vmm_rule() {
        let vmx = "processor\t: 0\nflags\t\t: fpu vme vmx sse2\n";
        let plain = "processor\t: 0\nflags\t\t: fpu vme sse2 hypervisor\n";
        assert_eq!(emulating_host(false, vmx), None);
        assert_eq!(emulating_host(false, &vmx.replace("vmx", "svm")), None);
        assert!(emulating_host(false, plain).is_some_and(|why| why.contains("neither vmx nor svm")));
        assert!(emulating_host(true, vmx).is_some_and(|why| why.contains("kvm_pvm")));
        assert_eq!(emulating_host(false, ""), None);
    }

    #[test]
    fn explicit_settings_win_over_detection() {
        assert!(Workarounds::On.resolve().0);
        assert!(!Workarounds::Off.resolve().0);
        assert_eq!(
            Workarounds::Auto.resolve().0,
            detect_emulating_host().is_some()
        );
        for w in [Workarounds::Auto, Workarounds::On, Workarounds::Off] {
            assert_eq!(w.as_str().parse::<Workarounds>(), Ok(w));
        }
        assert!("yes"
            .parse::<Workarounds>()
            .is_err_and(|e| e.contains("yes")));
    }
}
