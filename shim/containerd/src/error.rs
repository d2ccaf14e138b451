//! Task API errors and the ttrpc status codes containerd maps them to (errdefs).

use containerd_shim::protos::ttrpc::{self, Code};
use rust_vm_protocol::{ClientError, ErrorCode};
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
    #[error("{context}: {source}")]
    Agent {
        context: String,
        #[source]
        source: ClientError,
    },
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

    pub fn internal(context: &str, err: impl std::fmt::Display) -> ShimError {
        ShimError::Internal(format!("{context}: {err}"))
    }

    fn code(&self) -> Code {
        match self {
            ShimError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            ShimError::NotFound(_) => Code::NOT_FOUND,
            ShimError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ShimError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            ShimError::Unimplemented(_) => Code::UNIMPLEMENTED,
            ShimError::Agent { source, .. } => match source.code() {
                Some(ErrorCode::InvalidArgument) => Code::INVALID_ARGUMENT,
                Some(ErrorCode::NotFound) => Code::NOT_FOUND,
                Some(ErrorCode::AlreadyExists) => Code::ALREADY_EXISTS,
                Some(ErrorCode::FailedPrecondition) => Code::FAILED_PRECONDITION,
                Some(ErrorCode::Unsupported) => Code::UNIMPLEMENTED,
                _ => Code::INTERNAL,
            },
            ShimError::Internal(_) => Code::INTERNAL,
        }
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(err: ShimError) -> ttrpc::Error {
        log::warn!("{err}");
        ttrpc::Error::RpcStatus(ttrpc::get_status(err.code(), err.to_string()))
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
