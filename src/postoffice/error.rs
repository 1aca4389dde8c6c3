//! What can go wrong behind an RPC, named after what happened.
//!
//! The core's own failures are variants here; a failed delivery keeps the transport's
//! [`SendError`] and a failed store operation its [`StoreError`] as their source. Only
//! `grpc::status` decides which gRPC code each one becomes.

use crate::{
    domain::{Mailbox, ValidationError},
    oauth::TokenRequestError,
    store::StoreError,
    transport::SendError,
    variables,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or breaks a limit.
    #[error(transparent)]
    Invalid(#[from] ValidationError),

    /// Status was asked about a mailbox the service has never seen.
    #[error(
        "{mailbox} is unknown to graph-mailer: it was never connected and never sent through \
         this service; call Connect for it"
    )]
    UnknownMailbox { mailbox: Mailbox },

    /// Connect needs the Microsoft identity platform, and none is configured.
    #[error(
        "Connect needs Microsoft: this service runs the sandbox transport (no tenant is \
         configured). Set {}, {} and {} to the app registration's values and restart",
        variables::TENANT_ID,
        variables::CLIENT_ID,
        variables::CLIENT_SECRET
    )]
    ConnectNeedsMicrosoft,

    /// The caller's role or mailboxes do not allow this.
    #[error("caller {caller} may not {action}: {reason}")]
    NotAllowed {
        caller: String,
        /// What was refused, such as "send as ceo@contoso.com".
        action: String,
        /// What the caller lacks.
        reason: String,
    },

    /// `GRAPH_MAILER_ALLOWED_MAILBOXES` does not list the mailbox.
    #[error(
        "{mailbox} may not be connected to this service: {} does not list it",
        variables::ALLOWED_MAILBOXES
    )]
    MailboxNotAllowed { mailbox: Mailbox },

    /// Too many sign-in links are out and unused.
    #[error(
        "{outstanding} sign-in links are out and unused, the most this service keeps: wait \
         until some are used or expire (10 minutes)"
    )]
    TooManySignInLinks { outstanding: u64 },

    /// The request names no mailbox and none is connected to stand in.
    #[error(
        "no mailbox is connected: call Connect for the mailbox to send as and have its owner \
         sign in"
    )]
    NoMailboxConnected,

    /// The request names no mailbox and several are connected.
    #[error("mailbox is empty but {connected} mailboxes are connected: name the one to send as")]
    SenderAmbiguous { connected: usize },

    /// The request names no mailbox and the caller may send as several.
    #[error(
        "mailbox is empty but caller {caller} may send as {mailboxes}: name the one to send as"
    )]
    SenderUnnamed { caller: String, mailboxes: String },

    /// The idempotency key was used for a different message within its lifetime.
    #[error(
        "idempotency_key was already used for a different message (message_id {message_id}) \
         within the last 24 hours: use a new key for a new message"
    )]
    KeyReused { message_id: String },

    /// Another call with the key is still sending.
    #[error(
        "another call with this idempotency_key (message_id {message_id}) is still sending; \
         retry with the same key later to get its result"
    )]
    KeyInUse { message_id: String },

    /// The first send under the key may or may not have reached Microsoft.
    #[error(
        "the first send with this idempotency_key (message_id {message_id}) got no answer from \
         Microsoft: it may or may not have been sent. Check the mailbox's Sent Items; to send it \
         (again), use a new idempotency_key"
    )]
    EarlierOutcomeUnknown { message_id: String },

    /// No queued message has this id (it never existed, or its status was purged).
    #[error(
        "no queued message has the id {message_id} (statuses are kept {} after a message finishes)",
        variables::OUTBOX_RETENTION_SECONDS
    )]
    UnknownMessage { message_id: String },

    /// No SendBulk batch has this id.
    #[error("no batch has the id {batch_id}")]
    UnknownBatch { batch_id: String },

    /// The message can no longer be cancelled.
    #[error("message {message_id} is {state}, not queued: only a QUEUED message can be cancelled")]
    NotQueued { message_id: String, state: String },

    /// The batch's idempotency key was used for a different batch.
    #[error(
        "idempotency_key was already used for a different batch (batch_id {batch_id}) within \
         the last 24 hours: use a new key for a new batch"
    )]
    BatchKeyReused { batch_id: String },

    /// The sign-in link could not be built.
    #[error("cannot build the sign-in link: {0}")]
    SignInLink(#[source] TokenRequestError),

    /// The delivery failed.
    #[error(transparent)]
    Delivery(#[from] SendError),

    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// Whether the service itself is at fault (its store, a bug), rather than the request or
    /// Microsoft: such failures are logged as errors.
    pub fn is_service_fault(&self) -> bool {
        match self {
            Self::Store(error) => !error.is_undecryptable(),
            Self::SignInLink(_) | Self::Delivery(SendError::Internal { .. }) => true,
            _ => false,
        }
    }
}
