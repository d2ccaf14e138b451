//! Task API errors and the ttrpc status codes containerd maps them to (errdefs).

use containerd_shim::protos::ttrpc::{self, Code};
use rust_vm_protocol::{ClientError, ErrorCode};
use rust_vm_sandbox::hooks::HookError;
use rust_vm_sandbox::{Chain, PodError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ShimError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
    /// The agent refused or failed a request; its message names what was wrong.
    #[error("{context}")]
    Agent {
        context: String,
        #[source]
        source: ClientError,
    },
    /// A step of the pod lifecycle failed (the agent's refusals keep their code).
    #[error(transparent)]
    Pod(#[from] PodError),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, ShimError>;

impl ShimError {
    pub fn agent(context: impl Into<String>, source: ClientError) -> ShimError {
        ShimError::Agent {
            context: context.into(),
            source,
        }
    }

    /// An internal failure described by `context` and the whole chain of `err`.
    pub fn internal(context: &str, err: &dyn std::error::Error) -> ShimError {
        ShimError::Internal(format!("{context}: {}", Chain(err)))
    }

    fn agent_code(code: Option<ErrorCode>) -> Code {
        match code {
            Some(ErrorCode::InvalidArgument) => Code::INVALID_ARGUMENT,
            Some(ErrorCode::NotFound) => Code::NOT_FOUND,
            Some(ErrorCode::AlreadyExists) => Code::ALREADY_EXISTS,
            Some(ErrorCode::FailedPrecondition) => Code::FAILED_PRECONDITION,
            Some(ErrorCode::Unsupported) => Code::UNIMPLEMENTED,
            _ => Code::INTERNAL,
        }
    }

    fn code(&self) -> Code {
        match self {
            ShimError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            ShimError::NotFound(_) => Code::NOT_FOUND,
            ShimError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ShimError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            ShimError::Unimplemented(_) => Code::UNIMPLEMENTED,
            ShimError::Agent { source, .. } => Self::agent_code(source.code()),
            ShimError::Pod(PodError::Hook(HookError::InContainer { .. })) => Code::INVALID_ARGUMENT,
            ShimError::Pod(err) => Self::agent_code(err.agent_code()),
            ShimError::Internal(_) => Code::INTERNAL,
        }
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(err: ShimError) -> ttrpc::Error {
        let message = Chain(&err).to_string();
        log::warn!("{message}");
        ttrpc::Error::RpcStatus(ttrpc::get_status(err.code(), message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_vm_protocol::ProtocolError;

    #[test]
    fn agent_refusals_keep_their_code_and_message() {
        let err = ShimError::agent(
            "create container c1",
            ClientError::Remote {
                op: "create_container",
                error: ProtocolError::new(ErrorCode::InvalidArgument, "process.args is missing"),
            },
        );
        assert_eq!(err.code(), Code::INVALID_ARGUMENT);
        let ttrpc::Error::RpcStatus(status) = ttrpc::Error::from(err) else {
            panic!("not a status");
        };
        assert!(
            status.message.contains("process.args"),
            "{}",
            status.message
        );
    }
}
