//! Small settings shared by the runtime configuration and the sandbox: the back-end and the log
//! level (the VMM's).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A KVM microVM per sandbox (the product).
    #[default]
    Vm,
    /// The agent on the host in fresh namespaces (tests and debugging only: no VM isolation).
    Namespaces,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vm => "vm",
            Backend::Namespaces => "namespaces",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vm" => Ok(Backend::Vm),
            "namespaces" => Ok(Backend::Namespaces),
            other => Err(format!(
                "unknown sandbox back-end {other:?} (expected \"vm\", or \"namespaces\" for tests and debugging)"
            )),
        }
    }
}

/// Log verbosity (`log_level`, `--log-level`): the VMM's levels, passed on to the VMM and the
/// agent as they are.
pub use vmm_config::LogLevel;
