//! Where a validated message goes: the [`Transport`] every delivery route implements, and the
//! [`SendError`] each of them answers with.
//!
//! - [`sandbox`]: writes `.eml` files; nothing leaves the machine.
//! - `crate::graph::GraphTransport`: Microsoft Graph with delegated tokens.
//!
//! The core holds a `dyn Transport` and asks it what it needs to know (its name, whether a
//! mailbox must be connected before it sends) instead of matching on which one it is. A new
//! transport is a new implementation of the trait, chosen in `startup`.

pub mod sandbox;

use std::{fmt, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};

pub use sandbox::SandboxTransport;

use crate::{
    domain::{Mailbox, OutgoingMessage, ValidationError},
    oauth::TokenError,
    variables,
};

/// A delivery route.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + fmt::Debug {
    /// The name Status, logs and metrics show: `graph`, `sandbox`.
    fn name(&self) -> &'static str;

    /// Whether a mailbox must have been connected (its owner signed in through Connect) before
    /// it can send. When false, any address may send and every mailbox counts as connected.
    fn needs_connected_mailboxes(&self) -> bool;

    /// Sends `message` as `mailbox`; returns when the message was accepted.
    async fn send(
        &self,
        mailbox: &Mailbox,
        message: &OutgoingMessage,
        message_id: &str,
    ) -> Result<DateTime<Utc>, SendError>;

    /// Whether the message sent as `mailbox` under `message_id` reached the mailbox's Sent
    /// Items: `Ok(None)` when this transport cannot tell (for Graph: no read permission).
    async fn find_sent(
        &self,
        _mailbox: &Mailbox,
        _message_id: &str,
    ) -> Result<Option<bool>, SendError> {
        Ok(None)
    }

    /// Forgets what is held in memory for `mailbox` (after Disconnect).
    fn forget(&self, _mailbox: &Mailbox) {}
}

/// The transport in use, shared.
pub type SharedTransport = Arc<dyn Transport>;

/// Support identifiers of a provider's answer, for a support case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestIds {
    /// The provider's own id of the request (Graph's `request-id`).
    pub request_id: Option<String>,
    /// The id the service sent with it (the message id).
    pub client_request_id: Option<String>,
}

impl fmt::Display for RequestIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request-id {}, client-request-id {}",
            self.request_id.as_deref().unwrap_or("-"),
            self.client_request_id.as_deref().unwrap_or("-")
        )
    }
}

/// Why a message was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The message breaks a rule of the provider (refused recipients, size, headers).
    #[error(transparent)]
    Invalid(#[from] ValidationError),

    /// No usable access token: not connected, must sign in again, misconfigured, or the
    /// identity platform is down.
    #[error(transparent)]
    Token(#[from] TokenError),

    /// The mailbox lacks a delegated permission this message needs.
    #[error(
        "this message's {needed_for} need Microsoft's draft and upload-session path, which needs \
         the delegated permission {permission}: add it to the app registration and to {}, \
         then call Connect again for {mailbox} with force_consent",
        variables::GRAPH_SCOPES
    )]
    MissingPermission {
        mailbox: Mailbox,
        permission: &'static str,
        /// What needs it, such as "attachments (5.0 MB)".
        needed_for: String,
    },

    /// The signed-in account may not send as this address.
    #[error(
        "Microsoft refused to send as {mailbox} (ErrorSendAsDenied): the account that connected \
         it has no right to send as this address; connect the mailbox with its owner's account"
    )]
    SendAsDenied { mailbox: Mailbox },

    /// The delegated permission to send is missing or was revoked.
    #[error(
        "Microsoft denied access for {mailbox} (ErrorAccessDenied): the delegated permission \
         Mail.Send is missing or was revoked; add it to the app registration, grant consent, then \
         call Connect again with force_consent"
    )]
    AccessDenied { mailbox: Mailbox },

    /// Another refusal of the request (HTTP 403).
    #[error("Microsoft refused the request for {mailbox} ({code}: {message}; {ids})")]
    Forbidden {
        mailbox: Mailbox,
        code: String,
        message: String,
        ids: RequestIds,
    },

    /// The mailbox cannot send through the API at all (no licence, on-premises).
    #[error(
        "{mailbox} cannot send through Microsoft Graph (MailboxNotEnabledForRESTAPI): the \
         mailbox has no Exchange Online licence or is on-premises"
    )]
    MailboxNotEnabled { mailbox: Mailbox },

    /// Graph rejected a token that was just refreshed: the grant no longer works for Graph.
    #[error(
        "Microsoft Graph rejected {mailbox}'s freshly refreshed access token (401 twice): the \
         connection no longer works for Graph; call Connect again for {mailbox} (with \
         force_consent if permissions changed)"
    )]
    TokenRejected { mailbox: Mailbox },

    /// Exchange has stopped the mailbox sending; its sends are held back until `paused_until`.
    #[error(
        "Exchange has stopped {mailbox} sending ({code}: {message}); graph-mailer holds its sends \
         back until {} — check the mailbox's sending limits or restriction in the Microsoft 365 \
         admin center",
        paused_until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )]
    SendingBlocked {
        mailbox: Mailbox,
        code: String,
        message: String,
        paused_until: DateTime<Utc>,
    },

    /// The mailbox is over its storage quota.
    #[error(
        "{mailbox}'s mailbox is full (ErrorQuotaExceeded): free space in it or raise its quota, \
         then send again"
    )]
    MailboxFull { mailbox: Mailbox },

    /// The provider throttled every attempt; nothing was sent.
    #[error(
        "Microsoft Graph is throttling {mailbox} (429 after {attempts} attempts); nothing was \
         sent: {}",
        retry_hint(*retry_after)
    )]
    Throttled {
        mailbox: Mailbox,
        attempts: u32,
        retry_after: Option<Duration>,
    },

    /// The provider answered "unavailable" to every attempt; nothing was sent.
    #[error(
        "Microsoft Graph is unavailable ({status} after {attempts} attempts); nothing was sent: {}",
        retry_hint(*retry_after)
    )]
    ProviderUnavailable {
        status: u16,
        attempts: u32,
        retry_after: Option<Duration>,
    },

    /// No connection could be made to the provider; nothing was sent.
    #[error("Microsoft Graph cannot be reached ({reason}); nothing was sent — retry later")]
    Unreachable { reason: String },

    /// A request preparing the message went unanswered; nothing was sent.
    #[error(
        "no answer from Microsoft Graph while preparing the message ({reason}); nothing was sent \
         — retry later"
    )]
    NoAnswerWhilePreparing { reason: String },

    /// The mailbox's places for concurrent requests stayed taken; nothing was sent.
    #[error(
        "{mailbox} already has {in_flight} requests in flight to Microsoft Graph (Outlook's \
         limit) and none finished within {} s; nothing was sent — retry later",
        waited.as_secs()
    )]
    MailboxBusy {
        mailbox: Mailbox,
        in_flight: usize,
        waited: Duration,
    },

    /// The sending request left, and no answer came: the message may or may not have been
    /// accepted, so it must not be resent blindly.
    #[error(
        "no answer from Microsoft Graph after the message was sent ({reason}): it may or may not \
         have been accepted, so it was not resent; check the mailbox's Sent Items before sending \
         again (message_id {message_id})"
    )]
    OutcomeUnknown { message_id: String, reason: String },

    /// An answer nobody expected.
    #[error("Microsoft Graph answered {status} {code}: {message} ({ids})")]
    Unexpected {
        status: u16,
        code: String,
        message: String,
        ids: RequestIds,
    },

    /// The sandbox could not write its file.
    #[error("the sandbox cannot write its .eml file: {0}")]
    Storage(#[source] std::io::Error),

    /// A bug: a task the send depended on failed.
    #[error("{what} failed: {reason}")]
    Internal { what: &'static str, reason: String },
}

impl SendError {
    /// The delay a caller should wait before retrying, when one makes sense.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { retry_after, .. } | Self::ProviderUnavailable { retry_after, .. } => {
                Some(retry_after.unwrap_or(DEFAULT_RETRY_AFTER))
            }
            Self::MailboxBusy { .. } => Some(Duration::from_secs(5)),
            Self::SendingBlocked { paused_until, .. } => {
                Some((*paused_until - Utc::now()).to_std().unwrap_or_default())
            }
            Self::Token(TokenError::Unavailable { .. }) => Some(Duration::from_secs(30)),
            _ => None,
        }
    }

    /// Whether the message may have been accepted although the send failed.
    pub fn may_have_been_sent(&self) -> bool {
        matches!(self, Self::OutcomeUnknown { .. })
    }
}

/// What a caller is told to wait when the provider named no delay.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

fn retry_hint(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(after) => format!("Microsoft asks to retry after {} s", after.as_secs()),
        None => "retry in about 30 s".to_owned(),
    }
}
