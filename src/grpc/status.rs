//! The one place where errors become gRPC statuses.
//!
//! INVALID_ARGUMENT carries a `google.rpc.BadRequest` naming the field; retryable failures carry
//! a `google.rpc.RetryInfo` with Microsoft's Retry-After, so generated clients can back off
//! without parsing messages.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{domain::ValidationError, mailer::MailerError};

impl From<MailerError> for Status {
    fn from(error: MailerError) -> Self {
        let message = error.to_string();
        match error {
            MailerError::Invalid(ValidationError { field, reason }) => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request_violation(field, reason),
            ),
            MailerError::NotFound(_) => Status::not_found(message),
            MailerError::FailedPrecondition(_) => Status::failed_precondition(message),
            MailerError::PermissionDenied(_) => Status::permission_denied(message),
            MailerError::AlreadyExists(_) => Status::already_exists(message),
            MailerError::Aborted(_) => Status::aborted(message),
            MailerError::ResourceExhausted { retry_after, .. } => {
                with_retry(Code::ResourceExhausted, message, retry_after)
            }
            MailerError::Unavailable { retry_after, .. } => {
                with_retry(Code::Unavailable, message, retry_after)
            }
            MailerError::OutcomeUnknown(_) => Status::unavailable(message),
            MailerError::Internal(_) => Status::internal(message),
            MailerError::Unimplemented(_) => Status::unimplemented(message),
        }
    }
}

impl From<ValidationError> for Status {
    fn from(error: ValidationError) -> Self {
        MailerError::Invalid(error).into()
    }
}

fn with_retry(code: Code, message: String, retry_after: Option<std::time::Duration>) -> Status {
    match retry_after {
        Some(delay) => {
            Status::with_error_details(code, message, ErrorDetails::with_retry_info(Some(delay)))
        }
        None => Status::new(code, message),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
        let status = Status::from(MailerError::ResourceExhausted {
            message: "throttled: retry after 7 s".into(),
            retry_after: Some(Duration::from_secs(7)),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        let retry = status.get_details_retry_info().unwrap();
        assert_eq!(retry.retry_delay, Some(Duration::from_secs(7)));
    }

    #[test]
    fn an_unknown_outcome_is_unavailable() {
        let status = Status::from(MailerError::OutcomeUnknown("maybe sent".into()));
        assert_eq!(status.code(), Code::Unavailable);
    }
}
