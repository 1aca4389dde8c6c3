//! The errors of the application core, one variant per kind of answer a caller gets.
//!
//! Transports and the token engine translate their failures into these; `grpc::status` maps
//! them to gRPC statuses in one place.

use std::time::Duration;

use crate::{
    domain::ValidationError,
    oauth::{StartError, TokenError},
    store::StoreError,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    /// The request is malformed or breaks a limit.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A named mailbox is unknown.
    #[error("{0}")]
    NotFound(String),
    /// The system is not in a state to do this; the message says what to do.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Microsoft refuses to let the mailbox do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// An idempotency key is reused for a different message.
    #[error("{0}")]
    AlreadyExists(String),
    /// A concurrent call holds the idempotency key.
    #[error("{0}")]
    Aborted(String),
    /// Throttled beyond the retry budget, or a quota is exhausted.
    #[error("{message}")]
    ResourceExhausted {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Microsoft or the store is unavailable; retrying later may help.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The request may or may not have reached Microsoft: do not resend blindly.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// A bug or an answer nobody expected.
    #[error("{0}")]
    Internal(String),
    /// The transport cannot do this (the sandbox has no Microsoft to talk to).
    #[error("{0}")]
    Unimplemented(String),
}

impl MailerError {
    /// The gRPC code's name, for metrics and logs.
    pub fn code_name(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "INVALID_ARGUMENT",
            Self::NotFound(_) => "NOT_FOUND",
            Self::FailedPrecondition(_) => "FAILED_PRECONDITION",
            Self::PermissionDenied(_) => "PERMISSION_DENIED",
            Self::AlreadyExists(_) => "ALREADY_EXISTS",
            Self::Aborted(_) => "ABORTED",
            Self::ResourceExhausted { .. } => "RESOURCE_EXHAUSTED",
            Self::Unavailable { .. } | Self::OutcomeUnknown(_) => "UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
            Self::Unimplemented(_) => "UNIMPLEMENTED",
        }
    }

    /// An unavailable error without a retry hint.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<StoreError> for MailerError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Undecryptable(_) => Self::FailedPrecondition(error.to_string()),
            other => {
                tracing::error!(
                    error = crate::telemetry::redact_addresses(&other.to_string()),
                    "store failure"
                );
                Self::unavailable(format!("graph-mailer's store is unavailable: {other}"))
            }
        }
    }
}

impl From<TokenError> for MailerError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::NotConnected { .. }
            | TokenError::ReauthorizationRequired { .. }
            | TokenError::Configuration { .. } => Self::FailedPrecondition(error.to_string()),
            TokenError::Unavailable { advice } => Self::Unavailable {
                message: advice,
                retry_after: Some(Duration::from_secs(30)),
            },
            TokenError::Store(store) => store.into(),
        }
    }
}

impl From<StartError> for MailerError {
    fn from(error: StartError) -> Self {
        match error {
            StartError::Store(store) => store.into(),
            StartError::Link(link) => Self::Internal(link.to_string()),
        }
    }
}
