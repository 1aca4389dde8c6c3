//! What the store keeps, as the rest of the service sees it.

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::domain::Mailbox;

/// Where a mailbox stands in its authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    NotConnected,
    Pending,
    Connected,
    ReauthorizationRequired,
}

impl ConnectionState {
    pub(crate) fn from_stored(value: &str) -> Self {
        match value {
            "connected" => Self::Connected,
            "reauthorization_required" => Self::ReauthorizationRequired,
            _ => Self::NotConnected,
        }
    }

    /// The label used in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::NotConnected => "not_connected",
            Self::Pending => "pending",
            Self::Connected => "connected",
            Self::ReauthorizationRequired => "reauthorization_required",
        }
    }
}

/// What a `last_error` is about; a later success of the same kind clears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// Connecting or refreshing tokens.
    Token,
    /// Sending.
    Send,
}

impl ErrorSource {
    pub(crate) fn stored(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Send => "send",
        }
    }
}

/// A mailbox as Status reports it.
#[derive(Debug, Clone)]
pub struct MailboxRecord {
    pub mailbox: Mailbox,
    pub state: ConnectionState,
    pub account: Option<String>,
    pub scopes: Vec<String>,
    pub connected_at: Option<DateTime<Utc>>,
    pub access_token_expires_at: Option<DateTime<Utc>>,
    pub last_refreshed_at: Option<DateTime<Utc>>,
    pub last_sent_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub sent_total: u64,
    pub failed_total: u64,
}

/// The tokens of a connected mailbox.
#[derive(Debug, Clone)]
pub struct StoredTokens {
    pub state: ConnectionState,
    pub access_token: SecretString,
    pub access_token_expires_at: DateTime<Utc>,
    pub refresh_token: SecretString,
    pub scopes: Vec<String>,
    pub last_refreshed_at: Option<DateTime<Utc>>,
    /// Increases with every write of tokens; tells a waiter whether someone else refreshed.
    pub generation: i64,
}

/// A completed sign-in, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewConnection {
    pub mailbox: Mailbox,
    pub account: String,
    pub object_id: Option<String>,
    pub tenant_id: Option<String>,
    pub scopes: Vec<String>,
    pub access_token: SecretString,
    pub access_token_expires_at: DateTime<Utc>,
    pub refresh_token: SecretString,
}

/// Tokens returned by a refresh.
#[derive(Debug, Clone)]
pub struct RefreshedTokens {
    pub access_token: SecretString,
    pub access_token_expires_at: DateTime<Utc>,
    pub refresh_token: SecretString,
    /// The granted scopes, when Microsoft listed them.
    pub scopes: Option<Vec<String>>,
}

/// A sign-in link that has been handed out and not yet used.
#[derive(Debug, Clone)]
pub struct PendingAuthorization {
    /// SHA-256 of the `state` parameter (the state itself is never stored).
    pub state_hash: String,
    pub mailbox: Mailbox,
    pub pkce_verifier: SecretString,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Where a send under an idempotency key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdempotencyStatus {
    /// A call is sending now (or crashed while sending).
    InProgress,
    /// Microsoft accepted the message.
    Sent,
    /// The request left but no answer came: Microsoft may or may not have accepted it.
    Unknown,
}

impl IdempotencyStatus {
    pub(crate) fn stored(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Sent => "sent",
            Self::Unknown => "unknown",
        }
    }

    pub(crate) fn from_stored(value: &str) -> Self {
        match value {
            "sent" => Self::Sent,
            "unknown" => Self::Unknown,
            _ => Self::InProgress,
        }
    }
}

/// A stored idempotency key.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub request_hash: String,
    pub status: IdempotencyStatus,
    pub message_id: String,
    pub accepted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// The outcome of claiming a key.
#[derive(Debug, Clone)]
pub enum Claim {
    /// This call owns the key and must send.
    Claimed,
    /// Another call has (or had) it.
    Existing(IdempotencyRecord),
}

/// Send outcomes of one mailbox not yet written to the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendTally {
    pub sent: u64,
    pub failed: u64,
    pub last_sent_at: Option<DateTime<Utc>>,
    /// The latest outcome: success, or the failure's operator-facing message.
    pub last_outcome: Option<Result<(), String>>,
}

impl SendTally {
    /// Counts one send.
    pub fn add(&mut self, outcome: Result<DateTime<Utc>, String>) {
        match outcome {
            Ok(at) => {
                self.sent += 1;
                self.last_sent_at = Some(self.last_sent_at.map_or(at, |last| last.max(at)));
                self.last_outcome = Some(Ok(()));
            }
            Err(message) => {
                self.failed += 1;
                self.last_outcome = Some(Err(message));
            }
        }
    }

    /// Folds a later tally into this one.
    pub fn merge(&mut self, later: SendTally) {
        self.sent += later.sent;
        self.failed += later.failed;
        self.last_sent_at = match (self.last_sent_at, later.last_sent_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if later.last_outcome.is_some() {
            self.last_outcome = later.last_outcome;
        }
    }
}
