//! Microsoft Graph's error bodies and the one table that turns them into answers for callers.

use std::time::Duration;

use serde::Deserialize;

use crate::{
    domain::{Mailbox, ValidationError},
    mailer::MailerError,
};

/// `{"error": {"code", "message", "innerError": {"request-id", "client-request-id", "date"}}}`
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct GraphErrorBody {
    pub error: GraphError,
}

/// The `error` object.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct GraphError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, rename = "innerError", alias = "innererror")]
    pub inner_error: Option<InnerError>,
}

/// Support identifiers.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct InnerError {
    #[serde(default, rename = "request-id")]
    pub request_id: Option<String>,
    #[serde(default, rename = "client-request-id")]
    pub client_request_id: Option<String>,
    #[serde(default)]
    pub date: Option<String>,
}

/// A non-success answer from Graph, with what is needed to explain it.
#[derive(Debug, Clone, Default)]
pub struct GraphFailure {
    pub status: u16,
    pub error: GraphError,
    /// `Retry-After`, as a delay.
    pub retry_after: Option<Duration>,
    /// The `request-id` header (or the body's), for Microsoft support.
    pub request_id: Option<String>,
    /// The `client-request-id` we sent (the message id).
    pub client_request_id: Option<String>,
}

impl GraphFailure {
    fn ids(&self) -> String {
        format!(
            "request-id {}, client-request-id {}",
            self.request_id.as_deref().unwrap_or("-"),
            self.client_request_id.as_deref().unwrap_or("-")
        )
    }

    fn code_or_status(&self) -> String {
        if self.error.code.is_empty() {
            format!("HTTP {}", self.status)
        } else {
            self.error.code.clone()
        }
    }
}

/// The Graph error table: what a caller gets for each answer that is not retried.
pub fn map_failure(failure: &GraphFailure, mailbox: &Mailbox) -> MailerError {
    let message = &failure.error.message;
    match failure.error.code.as_str() {
        "ErrorInvalidRecipients" => ValidationError::new(
            "recipients",
            format!("Microsoft rejected the recipients (ErrorInvalidRecipients): {message}"),
        )
        .into(),
        "ErrorSendAsDenied" => MailerError::PermissionDenied(format!(
            "Microsoft refused to send as {mailbox} (ErrorSendAsDenied): the account that \
             connected it has no right to send as this address; connect the mailbox with its \
             owner's account"
        )),
        "ErrorAccessDenied" => MailerError::PermissionDenied(format!(
            "Microsoft denied access for {mailbox} (ErrorAccessDenied): the delegated permission \
             Mail.Send is missing or was revoked; add it to the app registration, grant consent, \
             then call Connect again with force_consent"
        )),
        "MailboxNotEnabledForRESTAPI" => MailerError::FailedPrecondition(format!(
            "{mailbox} cannot send through Microsoft Graph (MailboxNotEnabledForRESTAPI): the \
             mailbox has no Exchange Online licence or is on-premises"
        )),
        "ErrorQuotaExceeded" => MailerError::ResourceExhausted {
            message: format!(
                "{mailbox}'s mailbox is full (ErrorQuotaExceeded): free space in it or raise its \
                 quota, then send again"
            ),
            retry_after: None,
        },
        "ErrorMessageSizeExceeded" => ValidationError::new(
            "message",
            format!(
                "Microsoft refused the message's size for {mailbox} (ErrorMessageSizeExceeded): \
                 the mailbox's limit is lower than this message (35 MB by default; an Exchange \
                 administrator can raise it up to 150 MB)"
            ),
        )
        .into(),
        "InvalidInternetMessageHeaderCollection" => ValidationError::new(
            "headers",
            format!("Microsoft refused the custom headers: {message}"),
        )
        .into(),
        _ if failure.status == 413 => ValidationError::new(
            "message",
            format!(
                "Microsoft refused the request as too large ({})",
                failure.ids()
            ),
        )
        .into(),
        _ if failure.status == 403 => MailerError::PermissionDenied(format!(
            "Microsoft refused the request for {mailbox} ({}: {message}; {})",
            failure.code_or_status(),
            failure.ids()
        )),
        _ => MailerError::Internal(format!(
            "Microsoft Graph answered {} {}: {message} ({})",
            failure.status,
            failure.code_or_status(),
            failure.ids()
        )),
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn failure(status: u16, code: &str) -> GraphFailure {
        GraphFailure {
            status,
            error: GraphError {
                code: code.into(),
                message: "Something happened.".into(),
                inner_error: None,
            },
            retry_after: None,
            request_id: Some("req-1".into()),
            client_request_id: Some("msg-1".into()),
        }
    }

    fn code_of(status: u16, code: &str) -> (Code, String) {
        let mailbox = Mailbox::parse("mailbox", "noreply@contoso.com").unwrap();
        let status = tonic::Status::from(map_failure(&failure(status, code), &mailbox));
        (status.code(), status.message().to_owned())
    }

    #[test]
    fn the_error_table_maps_each_code_to_its_status() {
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
        ];
        for (status, code, expected, phrase) in table {
            let (got, message) = code_of(status, code);
            assert_eq!(got, expected, "{code}");
            assert!(message.contains(phrase), "{code}: {message}");
        }
    }

    #[test]
    fn unknown_codes_are_internal_with_both_request_ids() {
        let (code, message) = code_of(500, "ErrorSomethingNew");
        assert_eq!(code, Code::Internal);
        assert!(message.contains("request-id req-1"), "{message}");
        assert!(message.contains("client-request-id msg-1"), "{message}");
    }

    #[test]
    fn the_body_parses_in_graphs_shape() {
        let body = r#"{"error":{"code":"ErrorInvalidRecipients","message":"At least one recipient is not valid.","innerError":{"date":"2026-11-30T10:00:00","request-id":"r","client-request-id":"c"}}}"#;
        let parsed: GraphErrorBody = serde_json::from_str(body).unwrap();
        assert_eq!(parsed.error.code, "ErrorInvalidRecipients");
        assert_eq!(
            parsed.error.inner_error.unwrap().request_id.as_deref(),
            Some("r")
        );
    }
}
