//! Parse-don't-validate types for what callers send.
//!
//! A value of these types is valid by construction: the gRPC layer turns a request into them
//! once, and everything behind it (transports, store, logs) relies on that. Every failure is a
//! [`ValidationError`] naming the offending field as the caller wrote it (`to[2].address`).

mod address;
mod attachment;
mod idempotency;
mod message;
mod pattern;

use std::fmt;

pub use address::{EmailAddress, Mailbox};
pub use attachment::Attachment;
pub use idempotency::IdempotencyKey;
pub use message::{
    CustomHeader, Importance, ListCounts, MAX_ATTACHMENTS, MAX_HEADERS, MAX_RECIPIENTS,
    MAX_REPLY_TO, MessageParts, OutgoingMessage, Recipient, human_bytes,
};
pub use pattern::{MailboxPattern, any_matches};

/// A field of a request that is not acceptable, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    /// The field's path as the caller wrote it, such as `to[2].address` or `headers["X-A"]`.
    pub field: String,
    /// Why, in a sentence a caller can act on.
    pub reason: String,
}

impl ValidationError {
    /// A validation error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Rejects CR and LF, which would let a caller inject header lines.
pub(crate) fn reject_line_breaks(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.contains(['\r', '\n']) {
        Err(ValidationError::new(field, "must not contain CR or LF"))
    } else {
        Ok(())
    }
}

/// Shows a caller's value in an error message, shortened and quoted.
pub(crate) fn quoted(value: &str) -> impl fmt::Display + '_ {
    struct Quoted<'a>(&'a str);
    impl fmt::Display for Quoted<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let shown: String = self.0.chars().take(80).collect();
            let ellipsis = if shown.len() < self.0.len() {
                "…"
            } else {
                ""
            };
            write!(f, "{:?}", format!("{shown}{ellipsis}"))
        }
    }
    Quoted(value)
}
