//! What the sandbox does because of this host's kind of KVM.
//!
//! The rule itself (is guest ring 0 instruction-emulated here?) and the kernel words such a host
//! needs live in `vmm_config::host`, shared with the VMM and `rust-vm check`; this module adds
//! the runtime's side: the `emulation_workarounds` setting and the agent timeouts.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use vmm_config::host::{HostKind, EMULATING_HOST_CMDLINE};

/// Default agent timeout on an instruction-emulating host: the agent listens after ~20 s on an
/// idle Intel machine of the project's kind and ~70 s on an AMD one (docs/pvm-host-boot.md);
/// this leaves room for a loaded one.
pub const EMULATING_HOST_AGENT_TIMEOUT: Duration = Duration::from_secs(180);
/// Default agent timeout with hardware virtualization, where the guest boots in well under 1 s.
pub const HARDWARE_AGENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether sandboxes get the emulating-host options (`emulation_workarounds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Workarounds {
    /// When [`HostKind::emulates_guest_ring0`] says so.
    #[default]
    Auto,
    On,
    Off,
}

/// Whether the workarounds apply, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub apply: bool,
    pub why: String,
}

impl Workarounds {
    pub fn as_str(self) -> &'static str {
        match self {
            Workarounds::Auto => "auto",
            Workarounds::On => "on",
            Workarounds::Off => "off",
        }
    }

    /// Whether they apply on a host of kind `host`, and why.
    pub fn resolve(self, host: &HostKind) -> Decision {
        let (apply, why) = match self {
            Workarounds::On => (true, "asked for (emulation_workarounds = \"on\")".into()),
            Workarounds::Off => (false, "turned off (emulation_workarounds = \"off\")".into()),
            Workarounds::Auto => (host.emulates_guest_ring0(), host.to_string()),
        };
        Decision { apply, why }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_settings_win_over_the_host_kind() {
        let hw = HostKind::Hardware { flag: "vmx" };
        assert!(Workarounds::On.resolve(&hw).apply);
        assert!(!Workarounds::Off.resolve(&HostKind::Pvm).apply);
        let auto = Workarounds::Auto.resolve(&HostKind::Pvm);
        assert!(auto.apply && auto.why.contains("kvm_pvm"), "{auto:?}");
        assert!(!Workarounds::Auto.resolve(&hw).apply);
        for w in [Workarounds::Auto, Workarounds::On, Workarounds::Off] {
            assert_eq!(w.as_str().parse::<Workarounds>(), Ok(w));
        }
        assert!("yes"
            .parse::<Workarounds>()
            .is_err_and(|e| e.contains("yes")));
    }
}
