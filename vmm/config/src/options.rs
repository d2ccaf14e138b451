//! Named settings: CPU templates, emulation-failure reflection, log levels.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::host::HostKind;

/// Implements `name`, `Display`, `FromStr` and string serde for a settings enum from one table.
macro_rules! named_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL.iter().copied().find(|v| v.name() == s).ok_or_else(|| {
                    let names: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
                    format!("unknown {} {s:?} (expected {})", $what, names.join(", "))
                })
            }
        }

        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                ser.serialize_str(self.name())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
                String::deserialize(de)?.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// What a vCPU is allowed to see of the host CPU (docs/cpu-templates.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuTemplate {
    /// Everything KVM supports, normalised.
    Host,
    /// A baseline x86-64 CPU: what an instruction-emulating host (such as PVM running a guest
    /// kernel that is not PVM-aware) can execute in guest ring 0.
    #[default]
    Conservative,
}

named_enum!(CpuTemplate, "CPU template", {
    Host => "host",
    Conservative => "conservative",
});

/// Whether the VMM reflects emulation failures (`reflect_emulation_failures`,
/// docs/vmm-emulation-reflection.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReflectMode {
    /// On when this host's KVM emulates guest ring 0 ([`HostKind::emulates_guest_ring0`]).
    #[default]
    Auto,
    On,
    Off,
}

named_enum!(ReflectMode, "reflection mode", {
    Auto => "auto",
    On => "on",
    Off => "off",
});

impl ReflectMode {
    /// Whether reflection is on for a VM on a host of this kind.
    pub fn enabled_on(self, host: &HostKind) -> bool {
        match self {
            ReflectMode::On => true,
            ReflectMode::Off => false,
            ReflectMode::Auto => host.emulates_guest_ring0(),
        }
    }
}

/// Whether the VMM confines each of its threads to the system calls it needs (`seccomp`,
/// docs/security.md): a violation kills the VMM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeccompMode {
    #[default]
    On,
    /// For debugging only.
    Off,
}

named_enum!(SeccompMode, "seccomp mode", {
    On => "on",
    Off => "off",
});

/// Log verbosity of the VMM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Off,
    Error,
    #[default]
    Warn,
    Info,
    Debug,
    Trace,
}

named_enum!(LogLevel, "log level", {
    Off => "off",
    Error => "error",
    Warn => "warn",
    Info => "info",
    Debug => "debug",
    Trace => "trace",
});

impl LogLevel {
    pub fn to_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_errors_list_the_choices() {
        for t in CpuTemplate::ALL {
            assert_eq!(t.name().parse::<CpuTemplate>(), Ok(*t));
        }
        for m in ReflectMode::ALL {
            assert_eq!(m.name().parse::<ReflectMode>(), Ok(*m));
        }
        for l in LogLevel::ALL {
            assert_eq!(l.name().parse::<LogLevel>(), Ok(*l));
            assert_eq!(l.to_filter().to_string().to_lowercase(), l.name());
        }
        let err = "fast".parse::<CpuTemplate>().unwrap_err();
        assert!(
            err.contains("\"fast\"") && err.contains("host, conservative"),
            "{err}"
        );
        let err = serde_json::from_str::<ReflectMode>("\"yes\"").unwrap_err();
        assert!(err.to_string().contains("yes"), "{err}");
    }

    #[test]
    fn reflection_follows_the_host_unless_set() {
        let pvm = HostKind::Pvm;
        let hw = HostKind::Hardware { flag: "vmx" };
        assert!(ReflectMode::Auto.enabled_on(&pvm));
        assert!(!ReflectMode::Auto.enabled_on(&hw));
        assert!(ReflectMode::On.enabled_on(&hw));
        assert!(!ReflectMode::Off.enabled_on(&pvm));
    }
}
