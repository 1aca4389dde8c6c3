//! Microsoft Graph's error bodies and the one table that turns them into answers for callers.

use std::time::Duration;

use serde::Deserialize;

use crate::{
    domain::{Mailbox, ValidationError},
    transport::{RequestIds, SendError},
};

/// Exchange's codes for a mailbox it has stopped sending: over a sending limit, or restricted.
const SENDING_BLOCKED_CODES: [&str; 2] =
    ["ErrorExceededMessageLimit", "ErrorMessageSubmissionBlocked"];

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
    /// The support identifiers of this answer.
    pub fn ids(&self) -> RequestIds {
        RequestIds {
            request_id: self.request_id.clone(),
            client_request_id: self.client_request_id.clone(),
        }
    }

    fn code_or_status(&self) -> String {
        if self.error.code.is_empty() {
            format!("HTTP {}", self.status)
        } else {
            self.error.code.clone()
        }
    }

    /// Whether Exchange has stopped the mailbox sending (whatever the status: a
    /// `ErrorExceededMessageLimit` may come as a 429, and is no throttling to retry).
    pub fn blocks_sending(&self) -> bool {
        SENDING_BLOCKED_CODES.contains(&self.error.code.as_str())
    }

    /// Whether Outlook refused the request for the mailbox's concurrent requests (429
    /// `ApplicationThrottled` "… MailboxConcurrency limit").
    pub fn is_mailbox_concurrency(&self) -> bool {
        self.status == 429 && self.error.message.contains("MailboxConcurrency")
    }

    /// The Graph error table: what an answer that is not retried means for the send.
    /// `blocked_until` is how long a mailbox Exchange stopped sending is held back.
    pub fn into_send_error(
        self,
        mailbox: &Mailbox,
        blocked_until: chrono::DateTime<chrono::Utc>,
    ) -> SendError {
        if self.blocks_sending() {
            return SendError::SendingBlocked {
                mailbox: mailbox.clone(),
                code: self.error.code,
                message: self.error.message,
                paused_until: blocked_until,
            };
        }
        let mailbox = mailbox.clone();
        let message = self.error.message.clone();
        match self.error.code.as_str() {
            "ErrorInvalidRecipients" => ValidationError::new(
                "recipients",
                format!("Microsoft rejected the recipients (ErrorInvalidRecipients): {message}"),
            )
            .into(),
            "ErrorSendAsDenied" => SendError::SendAsDenied { mailbox },
            "ErrorAccessDenied" => SendError::AccessDenied { mailbox },
            "MailboxNotEnabledForRESTAPI" => SendError::MailboxNotEnabled { mailbox },
            "ErrorQuotaExceeded" => SendError::MailboxFull { mailbox },
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
            _ if self.status == 401 => SendError::TokenRejected { mailbox },
            _ if self.status == 413 => ValidationError::new(
                "message",
                format!("Microsoft refused the request as too large ({})", self.ids()),
            )
            .into(),
            _ if self.status == 403 => SendError::Forbidden {
                mailbox,
                code: self.code_or_status(),
                message,
                ids: self.ids(),
            },
            _ => SendError::Unexpected {
                status: self.status,
                code: self.code_or_status(),
                message,
                ids: self.ids(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
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

    fn meaning(status: u16, code: &str) -> SendError {
        let mailbox = Mailbox::parse("mailbox", "noreply@contoso.com").unwrap();
        failure(status, code).into_send_error(&mailbox, chrono::Utc::now())
    }

    #[test]
    fn the_error_table_names_what_happened() {
        assert!(
            matches!(meaning(400, "ErrorInvalidRecipients"), SendError::Invalid(v) if v.field == "recipients")
        );
        assert!(matches!(
            meaning(403, "ErrorSendAsDenied"),
            SendError::SendAsDenied { .. }
        ));
        assert!(matches!(
            meaning(403, "ErrorAccessDenied"),
            SendError::AccessDenied { .. }
        ));
        assert!(matches!(
            meaning(400, "MailboxNotEnabledForRESTAPI"),
            SendError::MailboxNotEnabled { .. }
        ));
        assert!(matches!(
            meaning(400, "ErrorQuotaExceeded"),
            SendError::MailboxFull { .. }
        ));
        assert!(
            matches!(meaning(400, "ErrorMessageSizeExceeded"), SendError::Invalid(v) if v.field == "message")
        );
        assert!(matches!(meaning(413, ""), SendError::Invalid(v) if v.field == "message"));
        assert!(matches!(
            meaning(403, "ErrorSomethingElse"),
            SendError::Forbidden { .. }
        ));
        assert!(matches!(
            meaning(401, "InvalidAuthenticationToken"),
            SendError::TokenRejected { .. }
        ));
        for (status, code) in [
            (403, "ErrorMessageSubmissionBlocked"),
            (429, "ErrorExceededMessageLimit"),
        ] {
            assert!(
                matches!(meaning(status, code), SendError::SendingBlocked { .. }),
                "{code}"
            );
        }
    }

    #[test]
    fn unknown_codes_are_unexpected_with_both_request_ids() {
        let error = meaning(500, "ErrorSomethingNew");
        assert!(matches!(error, SendError::Unexpected { status: 500, .. }));
        let message = error.to_string();
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
