//! Small settings shared by the runtime configuration and the sandbox: the back-end and the log
//! level.

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

/// Log verbosity, as accepted by `log_level` and `--log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    #[default]
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        vmm_config::LogLevel::from(self).name()
    }

    pub fn to_filter(self) -> log::LevelFilter {
        vmm_config::LogLevel::from(self).to_filter()
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "error" => Ok(LogLevel::Error),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            other => Err(format!(
                "unknown log level {other:?} (expected error, warn, info, debug or trace)"
            )),
        }
    }
}

/// The VMM's level for a sandbox logging at `level`.
impl From<LogLevel> for vmm_config::LogLevel {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => vmm_config::LogLevel::Error,
            LogLevel::Warn => vmm_config::LogLevel::Warn,
            LogLevel::Info => vmm_config::LogLevel::Info,
            LogLevel::Debug => vmm_config::LogLevel::Debug,
            LogLevel::Trace => vmm_config::LogLevel::Trace,
        }
    }
}
