//! Errors of the container library. Spec problems name the offending field in OCI's JSON
//! spelling (`process.args`, `mounts[2].destination`) so the caller can show them unchanged.
//!
//! A message never repeats its source: the errno of a failed syscall is the error's
//! `source()`, so print the whole chain (`{:#}` of an `anyhow::Error`, or walk `source()`)
//! to show the cause.

use std::io;
use std::path::PathBuf;

/// A spec that cannot be run, with the field that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid spec: {field}: {reason}")]
pub struct SpecError {
    /// JSON path of the field, e.g. `linux.namespaces[1].type`.
    pub field: String,
    pub reason: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SpecError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),

    #[error("container id {id:?} is invalid: {reason}")]
    InvalidId { id: String, reason: &'static str },

    #[error("container {id}: {what}")]
    Sys {
        id: String,
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("container {id}: init process failed during setup: {message}")]
    InitFailed { id: String, message: String },

    #[error("container {id}: cgroup {path}: {what}")]
    Cgroup {
        id: String,
        path: PathBuf,
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("container {id}: cgroups are disabled in this agent, so {what} is unavailable")]
    CgroupsDisabled { id: String, what: &'static str },

    #[error("container {id}: {operation} is not possible while the container is {state}")]
    InvalidState {
        id: String,
        operation: &'static str,
        state: &'static str,
    },

    #[error("container {id}: process {pid} does not belong to this container")]
    UnknownProcess { id: String, pid: i32 },

    #[error("container {id}: destroy left resources behind: {}", .problems.join("; "))]
    Cleanup { id: String, problems: Vec<String> },
}

impl ContainerError {
    pub(crate) fn sys(id: &str, what: impl Into<String>, source: impl Into<io::Error>) -> Self {
        ContainerError::Sys {
            id: id.to_string(),
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Convert a nix errno to `io::Error` (keeps the errno, prints the message).
pub(crate) fn errno_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}
