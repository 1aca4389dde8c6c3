//! The one place where errors become gRPC statuses.
//!
//! INVALID_ARGUMENT carries a `google.rpc.BadRequest` naming the field; retryable failures carry
//! a `google.rpc.RetryInfo` with Microsoft's Retry-After, so generated clients can back off
//! without parsing messages.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    callers::Refusal, domain::ValidationError, oauth::TokenError, postoffice::Error,
    transport::SendError,
};

/// The code a caller gets for `error`.
pub fn code(error: &Error) -> Code {
    match error {
        Error::Invalid(_) => Code::InvalidArgument,
        Error::UnknownMailbox { .. }
        | Error::UnknownMessage { .. }
        | Error::UnknownBatch { .. } => Code::NotFound,
        Error::NotQueued { .. } => Code::FailedPrecondition,
        Error::BatchKeyReused { .. } => Code::AlreadyExists,
        Error::ConnectNeedsMicrosoft
        | Error::NoMailboxConnected
        | Error::SenderAmbiguous { .. }
        | Error::SenderUnnamed { .. }
        | Error::EarlierOutcomeUnknown { .. } => Code::FailedPrecondition,
        Error::NotAllowed { .. } | Error::MailboxNotAllowed { .. } => Code::PermissionDenied,
        Error::TooManySignInLinks { .. } => Code::ResourceExhausted,
        Error::KeyReused { .. } => Code::AlreadyExists,
        Error::KeyInUse { .. } => Code::Aborted,
        Error::SignInLink(_) => Code::Internal,
        Error::Store(store) if store.is_undecryptable() => Code::FailedPrecondition,
        Error::Store(_) => Code::Unavailable,
        Error::Delivery(send) => send_code(send),
    }
}

fn send_code(error: &SendError) -> Code {
    match error {
        SendError::Invalid(_) => Code::InvalidArgument,
        SendError::Token(token) => token_code(token),
        SendError::MissingPermission { .. }
        | SendError::MailboxNotEnabled { .. }
        | SendError::TokenRejected { .. } => Code::FailedPrecondition,
        SendError::SendAsDenied { .. }
        | SendError::AccessDenied { .. }
        | SendError::Forbidden { .. } => Code::PermissionDenied,
        SendError::MailboxFull { .. }
        | SendError::Throttled { .. }
        | SendError::SendingBlocked { .. } => Code::ResourceExhausted,
        SendError::ProviderUnavailable { .. }
        | SendError::Unreachable { .. }
        | SendError::NoAnswerWhilePreparing { .. }
        | SendError::MailboxBusy { .. }
        | SendError::OutcomeUnknown { .. }
        | SendError::Storage(_) => Code::Unavailable,
        SendError::Unexpected { .. } | SendError::Internal { .. } => Code::Internal,
    }
}

fn token_code(error: &TokenError) -> Code {
    match error {
        TokenError::NotConnected { .. }
        | TokenError::ReauthorizationRequired { .. }
        | TokenError::Configuration { .. } => Code::FailedPrecondition,
        TokenError::Unavailable { .. } => Code::Unavailable,
        TokenError::Bug { .. } => Code::Internal,
        TokenError::Store(store) if store.is_undecryptable() => Code::FailedPrecondition,
        TokenError::Store(_) => Code::Unavailable,
    }
}

/// The code's name as metrics and logs show it (`INVALID_ARGUMENT`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = code(&error);
        let message = error.to_string();
        match error {
            Error::Invalid(violation) | Error::Delivery(SendError::Invalid(violation)) => {
                bad_request(message, violation)
            }
            Error::Delivery(send) => match send.retry_after() {
                Some(delay) => Status::with_error_details(
                    code,
                    message,
                    ErrorDetails::with_retry_info(Some(delay)),
                ),
                None => Status::new(code, message),
            },
            _ => Status::new(code, message),
        }
    }
}

/// A call refused before it ran: UNAUTHENTICATED, or RESOURCE_EXHAUSTED with the wait when
/// the caller is over its rate.
impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Self {
        let message = refusal.to_string();
        match refusal {
            Refusal::RateLimited { retry_after, .. } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            Refusal::MissingKey | Refusal::UnknownKey | Refusal::Conflicting { .. } => {
                Status::unauthenticated(message)
            }
        }
    }
}

/// A call that panicked.
pub fn internal_error() -> Status {
    Status::internal("graph-mailer failed while handling this call; it has been logged")
}

/// A call that does not fit the in-flight byte budget.
pub fn over_budget(bytes: u32, retry_after: std::time::Duration) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        format!(
            "graph-mailer is holding as many request bytes as it may (this call has {bytes}); \
             retry shortly"
        ),
        ErrorDetails::with_retry_info(Some(retry_after)),
    )
}

impl From<ValidationError> for Status {
    fn from(error: ValidationError) -> Self {
        Error::Invalid(error).into()
    }
}

fn bad_request(message: String, violation: ValidationError) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        message,
        ErrorDetails::with_bad_request_violation(violation.field, violation.reason),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        domain::Mailbox,
        graph::{GraphError, GraphFailure},
    };

    fn mailbox() -> Mailbox {
        Mailbox::parse("mailbox", "noreply@contoso.com").unwrap()
    }

    #[test]
    fn invalid_arguments_carry_the_field_as_a_bad_request_violation() {
        let status = Status::from(ValidationError::new("to[2].address", "is not valid"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "to[2].address: is not valid");
        let details = status.get_error_details();
        let violation = &details.bad_request().unwrap().field_violations[0];
        assert_eq!(violation.field, "to[2].address");
    }

    #[test]
    fn throttling_carries_retry_info() {
        let status = Status::from(Error::Delivery(SendError::Throttled {
            mailbox: mailbox(),
            attempts: 4,
            retry_after: Some(Duration::from_secs(7)),
        }));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("retry after 7 s"));
        let retry = status.get_details_retry_info().unwrap();
        assert_eq!(retry.retry_delay, Some(Duration::from_secs(7)));
    }

    #[test]
    fn an_unknown_outcome_is_unavailable() {
        let status = Status::from(Error::Delivery(SendError::OutcomeUnknown {
            message_id: "m".into(),
            reason: "timeout".into(),
        }));
        assert_eq!(status.code(), Code::Unavailable);
    }

    #[test]
    fn the_graph_error_table_maps_each_code_to_its_status() {
        let table = [
            (
                400,
                "ErrorInvalidRecipients",
                Code::InvalidArgument,
                "recipients",
            ),
            (403, "ErrorSendAsDenied", Code::PermissionDenied, "send as"),
            (
                403,
                "ErrorAccessDenied",
                Code::PermissionDenied,
                "Mail.Send",
            ),
            (
                400,
                "MailboxNotEnabledForRESTAPI",
                Code::FailedPrecondition,
                "no Exchange Online licence or is on-premises",
            ),
            (
                400,
                "ErrorQuotaExceeded",
                Code::ResourceExhausted,
                "mailbox is full",
            ),
            (
                400,
                "ErrorMessageSizeExceeded",
                Code::InvalidArgument,
                "ErrorMessageSizeExceeded",
            ),
            (
                500,
                "ErrorSomethingNew",
                Code::Internal,
                "client-request-id msg-1",
            ),
        ];
        for (status, graph_code, expected, phrase) in table {
            let failure = GraphFailure {
                status,
                error: GraphError {
                    code: graph_code.into(),
                    message: "Something happened.".into(),
                    inner_error: None,
                },
                retry_after: None,
                request_id: Some("req-1".into()),
                client_request_id: Some("msg-1".into()),
            };
            let status = Status::from(Error::Delivery(
                failure.into_send_error(&mailbox(), chrono::Utc::now()),
            ));
            assert_eq!(status.code(), expected, "{graph_code}");
            assert!(
                status.message().contains(phrase),
                "{graph_code}: {}",
                status.message()
            );
        }
    }
}
