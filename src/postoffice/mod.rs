//! The application core behind the RPCs: Connect, SendMail, Status, Disconnect.
//!
//! Knows nothing of gRPC: requests arrive as parsed domain types and failures leave as
//! [`Error`]. SendMail adds idempotency and counters around the transport; the transport is a
//! `dyn Transport`, asked what it needs rather than matched on.

mod error;
mod idempotency;
mod tally;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::Instrument;

pub use error::Error;

use crate::{
    clock::SharedClock,
    domain::{IdempotencyKey, Mailbox, OutgoingMessage, ValidationError},
    oauth::{ConnectFlow, SecretExpiry, SignInLink, StartError},
    store::{ConnectionState, MailboxRecord, Store},
    transport::SharedTransport,
};

/// A SendMail request, parsed.
#[derive(Debug, Clone)]
pub struct SendRequest {
    /// `None` when the caller left it empty.
    pub mailbox: Option<Mailbox>,
    pub message: OutgoingMessage,
    pub idempotency_key: Option<IdempotencyKey>,
    /// A hash of the whole request (key excluded), to tell a retry from a different message.
    pub request_hash: String,
}

/// What a caller learns of a successful send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    pub message_id: String,
    pub accepted_at: DateTime<Utc>,
    pub deduplicated: bool,
}

/// What Status reports.
#[derive(Debug, Clone)]
pub struct ServiceStatus {
    pub mailboxes: Vec<MailboxRecord>,
    /// The transport's name.
    pub transport: &'static str,
    pub client_secret_expires_at: Option<DateTime<Utc>>,
    pub warnings: Vec<String>,
}

/// The service's core.
#[derive(Debug)]
pub struct PostOffice {
    store: Store,
    clock: SharedClock,
    transport: SharedTransport,
    connect: Option<Arc<ConnectFlow>>,
    secret_expiry: SecretExpiry,
    tallies: tally::Tallies,
}

impl PostOffice {
    pub fn new(
        store: Store,
        clock: SharedClock,
        transport: SharedTransport,
        connect: Option<Arc<ConnectFlow>>,
        secret_expiry: SecretExpiry,
    ) -> Self {
        Self {
            store,
            clock,
            transport,
            connect,
            secret_expiry,
            tallies: tally::Tallies::default(),
        }
    }

    /// The transport's name: `graph` or `sandbox`.
    pub fn transport_name(&self) -> &'static str {
        self.transport.name()
    }

    /// Starts connecting `mailbox`: a sign-in link for its owner.
    pub async fn connect(
        &self,
        mailbox: &Mailbox,
        force_consent: bool,
    ) -> Result<SignInLink, Error> {
        let Some(connect) = &self.connect else {
            return Err(Error::ConnectNeedsMicrosoft);
        };
        connect
            .start(mailbox, force_consent)
            .await
            .map_err(|error| match error {
                StartError::Store(store) => Error::Store(store),
                StartError::Link(link) => Error::SignInLink(link),
            })
    }

    /// The mailbox a send goes out as: the one named, else the only connected one.
    pub async fn resolve_sender(&self, mailbox: Option<&Mailbox>) -> Result<Mailbox, Error> {
        if let Some(mailbox) = mailbox {
            return Ok(mailbox.clone());
        }
        if !self.transport.needs_connected_mailboxes() {
            return Err(ValidationError::new(
                "mailbox",
                "is required in sandbox mode, where any address may send",
            )
            .into());
        }
        let mut connected = self.store.connected_mailboxes().await?;
        match connected.len() {
            1 => Ok(connected.remove(0)),
            0 => Err(Error::NoMailboxConnected),
            connected => Err(Error::SenderAmbiguous { connected }),
        }
    }

    /// Sends a message as `mailbox` (see [`PostOffice::resolve_sender`]) under `message_id`.
    pub async fn send(
        &self,
        mailbox: &Mailbox,
        request: &SendRequest,
        message_id: &str,
    ) -> Result<SendReceipt, Error> {
        // A debug span: at the default level events name the message themselves, and a span per
        // message would cost as much as the log line.
        let span = tracing::debug_span!("send", message_id, mailbox_domain = mailbox.domain());
        self.send_in_span(mailbox, request, message_id)
            .instrument(span)
            .await
    }

    async fn send_in_span(
        &self,
        mailbox: &Mailbox,
        request: &SendRequest,
        message_id: &str,
    ) -> Result<SendReceipt, Error> {
        let key = request.idempotency_key.as_ref();
        if let Some(key) = key
            && let Some(earlier) = idempotency::claim(
                &self.store,
                &*self.clock,
                mailbox,
                key,
                &request.request_hash,
                message_id,
            )
            .await?
        {
            return Ok(earlier);
        }
        tracing::debug!(
            message_id,
            attachments = request.message.attachments().len(),
            bytes = request.message.size(),
            "sending"
        );
        let result = self
            .transport
            .send(mailbox, &request.message, message_id)
            .await;
        if let Some(key) = key {
            idempotency::finish(&self.store, mailbox, key, &result).await;
        }
        match result {
            Ok(accepted_at) => {
                // The store keeps milliseconds: a deduplicated answer must match this one.
                let accepted_at = crate::clock::from_millis(accepted_at.timestamp_millis());
                self.tallies.add(mailbox, Ok(accepted_at));
                Ok(SendReceipt {
                    message_id: message_id.to_owned(),
                    accepted_at,
                    deduplicated: false,
                })
            }
            Err(error) => {
                self.tallies.add(mailbox, Err(error.to_string()));
                Err(error.into())
            }
        }
    }

    /// The state of one mailbox, or of all.
    pub async fn status(&self, mailbox: Option<&Mailbox>) -> Result<ServiceStatus, Error> {
        let now = self.clock.now();
        self.tallies.flush(&self.store, now).await;
        let mailboxes = match mailbox {
            Some(mailbox) => match self.store.mailbox(mailbox, now).await? {
                Some(record) => vec![record],
                None => {
                    return Err(Error::UnknownMailbox {
                        mailbox: mailbox.clone(),
                    });
                }
            },
            None => self.store.mailboxes(now).await?,
        };
        let mailboxes = if self.transport.needs_connected_mailboxes() {
            mailboxes
        } else {
            mailboxes.into_iter().map(as_open_mailbox).collect()
        };
        Ok(ServiceStatus {
            mailboxes,
            transport: self.transport.name(),
            client_secret_expires_at: self.secret_expiry.expires_at,
            warnings: self.secret_expiry.warning(now).into_iter().collect(),
        })
    }

    /// Writes buffered send counters to the store (every second, and at shutdown).
    pub async fn flush_counters(&self) {
        self.tallies.flush(&self.store, self.clock.now()).await;
    }

    /// Forgets a mailbox's tokens and pending sign-ins.
    pub async fn disconnect(&self, mailbox: &Mailbox) -> Result<(), Error> {
        let known = self.store.disconnect(mailbox, self.clock.now()).await?;
        self.transport.forget(mailbox);
        tracing::info!(
            mailbox_domain = mailbox.domain(),
            known,
            "mailbox disconnected"
        );
        Ok(())
    }
}

/// Where any address may send without signing in, every mailbox counts as connected.
fn as_open_mailbox(mut record: MailboxRecord) -> MailboxRecord {
    if record.state == ConnectionState::NotConnected {
        record.state = ConnectionState::Connected;
        record.account = Some(record.mailbox.to_string());
    }
    record
}
