//! The application core behind the RPCs: Connect, SendMail, Status, Disconnect.
//!
//! Knows nothing of gRPC: requests arrive as parsed domain types with the [`Caller`] who made
//! them, and failures leave as [`Error`]. What a caller may do is decided here: senders act only
//! on their mailboxes, Connect and Disconnect are for admins. SendMail adds idempotency and
//! counters around the transport; the transport is a `dyn Transport`, asked what it needs
//! rather than matched on.

mod error;
mod idempotency;
mod pauses;
mod queued;
mod tally;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::Instrument;

pub use error::Error;

use crate::{
    audit::{AuditEvent, AuditLog, AuditRecord},
    callers::Caller,
    clock::SharedClock,
    domain::{
        IdempotencyKey, Mailbox, MailboxPattern, OutgoingMessage, ValidationError, any_matches,
    },
    oauth::{ConnectFlow, SecretExpiry, SignInLink, StartError},
    settings::GraphScopes,
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

/// What the core is made of.
#[derive(Debug)]
pub struct Parts {
    pub store: Store,
    pub clock: SharedClock,
    pub transport: SharedTransport,
    pub connect: Option<Arc<ConnectFlow>>,
    pub secret_expiry: SecretExpiry,
    /// The only mailboxes Connect accepts; empty: any.
    pub allowed_mailboxes: Vec<MailboxPattern>,
    pub audit: Arc<AuditLog>,
    /// The permissions the configuration asks for (Graph only), to tell which a mailbox lacks.
    pub scopes: Option<GraphScopes>,
}

/// The service's core.
#[derive(Debug)]
pub struct PostOffice {
    parts: Parts,
    tallies: tally::Tallies,
    pauses: pauses::Pauses,
    /// Mailboxes lately found connected (QueueMail asks for each message).
    connected: std::sync::Mutex<std::collections::HashMap<Mailbox, std::time::Instant>>,
}

impl PostOffice {
    pub fn new(parts: Parts) -> Self {
        Self {
            parts,
            tallies: tally::Tallies::default(),
            pauses: pauses::Pauses::default(),
            connected: std::sync::Mutex::default(),
        }
    }

    /// The transport's name: `graph` or `sandbox`.
    pub fn transport_name(&self) -> &'static str {
        self.parts.transport.name()
    }

    /// Starts connecting `mailbox`: a sign-in link for its owner. For admins, and only for
    /// mailboxes `GRAPH_MAILER_ALLOWED_MAILBOXES` lists.
    pub async fn connect(
        &self,
        caller: &Caller,
        mailbox: &Mailbox,
        force_consent: bool,
    ) -> Result<SignInLink, Error> {
        let result = self.start_connect(caller, mailbox, force_consent).await;
        let outcome = match &result {
            Ok(_) => "link_issued",
            Err(Error::NotAllowed { .. } | Error::MailboxNotAllowed { .. }) => "refused",
            Err(_) => "failed",
        };
        let mut record = AuditRecord::new(AuditEvent::Connect, outcome)
            .caller(&caller.name)
            .mailbox(mailbox.as_str());
        if let Err(error) = &result {
            record = record.detail(error.to_string());
        }
        self.parts.audit.record(record);
        result
    }

    async fn start_connect(
        &self,
        caller: &Caller,
        mailbox: &Mailbox,
        force_consent: bool,
    ) -> Result<SignInLink, Error> {
        require_admin(caller, "call Connect")?;
        let allowed = &self.parts.allowed_mailboxes;
        if !allowed.is_empty() && !any_matches(allowed, mailbox) {
            return Err(Error::MailboxNotAllowed {
                mailbox: mailbox.clone(),
            });
        }
        let Some(connect) = &self.parts.connect else {
            return Err(Error::ConnectNeedsMicrosoft);
        };
        connect
            .start(mailbox, force_consent, &caller.name)
            .await
            .map_err(|error| match error {
                StartError::Store(store) => Error::Store(store),
                StartError::Link(link) => Error::SignInLink(link),
                StartError::TooManyLinks { outstanding } => {
                    Error::TooManySignInLinks { outstanding }
                }
            })
    }

    /// The mailbox a send goes out as: the one named, if the caller may send as it; else the
    /// caller's only mailbox; else (for admins) the only connected one.
    pub async fn resolve_sender(
        &self,
        caller: &Caller,
        mailbox: Option<&Mailbox>,
    ) -> Result<Mailbox, Error> {
        if let Some(mailbox) = mailbox {
            require_mailbox(caller, mailbox, "send as")?;
            return Ok(mailbox.clone());
        }
        if !caller.is_admin() {
            return caller
                .only_mailbox()
                .cloned()
                .ok_or_else(|| Error::SenderUnnamed {
                    caller: caller.name.clone(),
                    mailboxes: caller.mailbox_list(),
                });
        }
        if !self.parts.transport.needs_connected_mailboxes() {
            return Err(ValidationError::new(
                "mailbox",
                "is required in sandbox mode, where any address may send",
            )
            .into());
        }
        let mut connected = self.parts.store.connected_mailboxes().await?;
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
        if let Some(paused) = self.pauses.refusal(mailbox, self.parts.clock.now()) {
            return Err(paused.into());
        }
        let key = request.idempotency_key.as_ref();
        if let Some(key) = key
            && let Some(earlier) = idempotency::claim(
                &self.parts.store,
                &*self.parts.clock,
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
            .parts
            .transport
            .send(mailbox, &request.message, message_id)
            .await;
        if let Some(key) = key {
            idempotency::finish(&self.parts.store, mailbox, key, &result).await;
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
                self.pauses
                    .note(&self.parts.store, &error, self.parts.clock.now())
                    .await;
                self.tallies.add(mailbox, Err(error.to_string()));
                Err(error.into())
            }
        }
    }

    /// The state of one mailbox, or of every mailbox the caller may send as.
    pub async fn status(
        &self,
        caller: &Caller,
        mailbox: Option<&Mailbox>,
    ) -> Result<ServiceStatus, Error> {
        let now = self.parts.clock.now();
        self.flush_counters().await;
        let mailboxes = match mailbox {
            Some(mailbox) => {
                require_mailbox(caller, mailbox, "see the status of")?;
                match self.parts.store.mailbox(mailbox, now).await? {
                    Some(record) => vec![record],
                    None => {
                        return Err(Error::UnknownMailbox {
                            mailbox: mailbox.clone(),
                        });
                    }
                }
            }
            None => {
                let mut all = self.parts.store.mailboxes(now).await?;
                all.retain(|record| caller.may_send_as(&record.mailbox));
                all
            }
        };
        let mut mailboxes: Vec<MailboxRecord> = if self.parts.transport.needs_connected_mailboxes()
        {
            mailboxes
        } else {
            mailboxes.into_iter().map(as_open_mailbox).collect()
        };
        let mut warnings: Vec<String> = self.parts.secret_expiry.warning(now).into_iter().collect();
        for record in &mut mailboxes {
            record.queue = self.parts.store.queue_usage(&record.mailbox, now).await?;
            if let Some(until) = record.queue.paused_until
                && record.paused_until.is_none_or(|own| own < until)
            {
                record.paused_until = Some(until);
                record.pause_reason = record.queue.pause_reason.clone();
            }
            if record.paused_until.is_some_and(|until| until <= now) {
                record.paused_until = None;
                record.pause_reason = None;
            }
            if let Some(scopes) = &self.parts.scopes
                && record.state == ConnectionState::Connected
            {
                record.missing_scopes = scopes.missing_from(&record.scopes);
                warnings.extend(record.missing_scopes.iter().map(|scope| {
                    format!(
                        "{}: configured {scope} is not granted: call Connect with force_consent \
                         for this mailbox to grant it",
                        record.mailbox
                    )
                }));
            }
        }
        Ok(ServiceStatus {
            mailboxes,
            transport: self.parts.transport.name(),
            client_secret_expires_at: self.parts.secret_expiry.expires_at,
            warnings,
        })
    }

    /// Writes buffered send counters to the store (every second, and at shutdown). Where a
    /// mailbox must be connected to send, counters go only to mailboxes the store knows: a send
    /// for an unknown address leaves no row.
    pub async fn flush_counters(&self) {
        let create_rows = !self.parts.transport.needs_connected_mailboxes();
        self.tallies
            .flush(&self.parts.store, self.parts.clock.now(), create_rows)
            .await;
    }

    /// Forgets a mailbox's tokens and pending sign-ins. For admins.
    pub async fn disconnect(&self, caller: &Caller, mailbox: &Mailbox) -> Result<(), Error> {
        let result = self.forget_mailbox(caller, mailbox).await;
        let outcome = match &result {
            Ok(()) => "disconnected",
            Err(Error::NotAllowed { .. }) => "refused",
            Err(_) => "failed",
        };
        self.parts.audit.record(
            AuditRecord::new(AuditEvent::Disconnect, outcome)
                .caller(&caller.name)
                .mailbox(mailbox.as_str()),
        );
        result
    }

    async fn forget_mailbox(&self, caller: &Caller, mailbox: &Mailbox) -> Result<(), Error> {
        require_admin(caller, "call Disconnect")?;
        let known = self
            .parts
            .store
            .disconnect(mailbox, self.parts.clock.now())
            .await?;
        self.parts.transport.forget(mailbox);
        tracing::info!(
            mailbox_domain = mailbox.domain(),
            known,
            caller = caller.name,
            "mailbox disconnected"
        );
        Ok(())
    }
}

/// Refuses a caller without the admin role.
fn require_admin(caller: &Caller, action: &str) -> Result<(), Error> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(Error::NotAllowed {
            caller: caller.name.clone(),
            action: action.to_owned(),
            reason: "that needs role = \"admin\" in the callers file".to_owned(),
        })
    }
}

/// Refuses a caller that may not send as `mailbox`.
fn require_mailbox(caller: &Caller, mailbox: &Mailbox, action: &str) -> Result<(), Error> {
    if caller.may_send_as(mailbox) {
        Ok(())
    } else {
        Err(Error::NotAllowed {
            caller: caller.name.clone(),
            action: format!("{action} {mailbox}"),
            reason: format!("its mailboxes are {}", caller.mailbox_list()),
        })
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
