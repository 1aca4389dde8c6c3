//! The application core behind the RPCs: Connect, SendMail, Status, Disconnect.
//!
//! Knows nothing of gRPC: requests arrive as parsed domain types and failures leave as
//! [`MailerError`]. SendMail adds idempotency, counters, metrics and logs around the transport.

mod error;
mod idempotency;
mod tally;

use std::{sync::Arc, time::Instant};

use chrono::{DateTime, Utc};
use tracing::Instrument;

pub use error::MailerError;

use crate::{
    clock::SharedClock,
    domain::{IdempotencyKey, Mailbox, OutgoingMessage, ValidationError},
    metrics,
    oauth::{ConnectFlow, SignInLink},
    settings::TransportKind,
    store::{ConnectionState, MailboxRecord, Store},
    transport::Transport,
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
    pub transport: TransportKind,
    pub client_secret_expires_at: Option<DateTime<Utc>>,
    pub warnings: Vec<String>,
}

/// The client secret's expiry as configured, for Status and warnings.
#[derive(Debug, Clone, Copy)]
pub struct SecretExpiry {
    pub expires_at: Option<DateTime<Utc>>,
    /// Warnings start this long before.
    pub warning: chrono::Duration,
}

impl SecretExpiry {
    /// A sentence when the secret expires soon or expired, `None` otherwise.
    pub fn warning(&self, now: DateTime<Utc>) -> Option<String> {
        let expires_at = self.expires_at?;
        let days = (expires_at - now).num_days();
        if expires_at <= now {
            Some(format!(
                "the client secret expired on {}: token requests fail with AADSTS7000222; create \
                 a new secret under \"Certificates & secrets\" and update \
                 GRAPH_MAILER_CLIENT_SECRET (or the file) and GRAPH_MAILER_CLIENT_SECRET_EXPIRES_AT",
                expires_at.format("%Y-%m-%d")
            ))
        } else if expires_at - now <= self.warning {
            Some(format!(
                "the client secret expires on {} (in {days} days): create a new secret under \
                 \"Certificates & secrets\" and rotate it before then",
                expires_at.format("%Y-%m-%d")
            ))
        } else {
            None
        }
    }

    /// Whether the secret has expired.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// The service's core.
#[derive(Debug)]
pub struct Mailer {
    store: Store,
    clock: SharedClock,
    transport: Transport,
    connect: Option<Arc<ConnectFlow>>,
    secret_expiry: SecretExpiry,
    secret_warned_on: std::sync::Mutex<Option<chrono::NaiveDate>>,
    tallies: tally::Tallies,
}

impl Mailer {
    pub fn new(
        store: Store,
        clock: SharedClock,
        transport: Transport,
        connect: Option<Arc<ConnectFlow>>,
        secret_expiry: SecretExpiry,
    ) -> Self {
        Self {
            store,
            clock,
            transport,
            connect,
            secret_expiry,
            secret_warned_on: std::sync::Mutex::new(None),
            tallies: tally::Tallies::default(),
        }
    }

    /// The transport in use.
    pub fn transport_kind(&self) -> TransportKind {
        self.transport.kind()
    }

    /// Starts connecting `mailbox`: a sign-in link for its owner.
    pub async fn connect(
        &self,
        mailbox: &Mailbox,
        force_consent: bool,
    ) -> Result<SignInLink, MailerError> {
        let Some(connect) = &self.connect else {
            return Err(MailerError::FailedPrecondition(
                "Connect needs Microsoft: this service runs the sandbox transport (no tenant is \
                 configured). Set GRAPH_MAILER_TENANT_ID, GRAPH_MAILER_CLIENT_ID and \
                 GRAPH_MAILER_CLIENT_SECRET to the app registration's values and restart"
                    .into(),
            ));
        };
        Ok(connect.start(mailbox, force_consent).await?)
    }

    /// Sends a message.
    pub async fn send(&self, request: SendRequest) -> Result<SendReceipt, MailerError> {
        let started = Instant::now();
        let _in_flight = metrics::InFlight::start();
        let mailbox = self.resolve_mailbox(request.mailbox.clone()).await?;
        let message_id = uuid::Uuid::now_v7().to_string();
        // A debug span: at the default level events name the message themselves, and a span per
        // message would cost as much as the log line.
        let span = tracing::debug_span!("send", message_id, mailbox_domain = mailbox.domain());
        let result = self
            .send_with_id(&mailbox, &request, message_id.clone())
            .instrument(span)
            .await;
        let duration = started.elapsed();
        let (outcome, code) = match &result {
            Ok(receipt) if receipt.deduplicated => ("deduplicated", "OK"),
            Ok(_) => ("sent", "OK"),
            Err(error) => ("failed", error.code_name()),
        };
        metrics::send_finished(
            mailbox.domain(),
            outcome,
            code,
            duration.as_secs_f64(),
            self.transport.kind().as_str(),
        );
        log_outcome(&mailbox, &request, &message_id, outcome, &result, duration);
        result
    }

    async fn send_with_id(
        &self,
        mailbox: &Mailbox,
        request: &SendRequest,
        message_id: String,
    ) -> Result<SendReceipt, MailerError> {
        let key = request.idempotency_key.as_ref();
        if let Some(key) = key
            && let Some(earlier) = idempotency::claim(
                &self.store,
                &*self.clock,
                mailbox,
                key,
                &request.request_hash,
                &message_id,
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
            .send(mailbox, &request.message, &message_id)
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
                    message_id,
                    accepted_at,
                    deduplicated: false,
                })
            }
            Err(error) => {
                self.tallies.add(mailbox, Err(error.to_string()));
                Err(error)
            }
        }
    }

    async fn resolve_mailbox(&self, mailbox: Option<Mailbox>) -> Result<Mailbox, MailerError> {
        if let Some(mailbox) = mailbox {
            return Ok(mailbox);
        }
        if self.transport.kind() == TransportKind::Sandbox {
            return Err(ValidationError::new(
                "mailbox",
                "is required in sandbox mode, where any address may send",
            )
            .into());
        }
        let mut connected = self.store.connected_mailboxes().await?;
        match connected.len() {
            1 => Ok(connected.remove(0)),
            0 => Err(MailerError::FailedPrecondition(
                "no mailbox is connected: call Connect for the mailbox to send as and have its \
                 owner sign in"
                    .into(),
            )),
            n => Err(MailerError::FailedPrecondition(format!(
                "mailbox is empty but {n} mailboxes are connected: name the one to send as"
            ))),
        }
    }

    /// The state of one mailbox, or of all.
    pub async fn status(&self, mailbox: Option<&Mailbox>) -> Result<ServiceStatus, MailerError> {
        let now = self.clock.now();
        self.tallies.flush(&self.store, now).await;
        let mailboxes = match mailbox {
            Some(mailbox) => match self.store.mailbox(mailbox, now).await? {
                Some(record) => vec![record],
                None => {
                    return Err(MailerError::NotFound(format!(
                        "{mailbox} is unknown to graph-mailer: it was never connected and never \
                         sent through this service; call Connect for it"
                    )));
                }
            },
            None => {
                let all = self.store.mailboxes(now).await?;
                publish_state_counts(&all);
                all
            }
        };
        let mailboxes = match self.transport.kind() {
            // In the sandbox every address can send without signing in.
            TransportKind::Sandbox => mailboxes.into_iter().map(as_sandbox_mailbox).collect(),
            TransportKind::Graph => mailboxes,
        };
        Ok(ServiceStatus {
            mailboxes,
            transport: self.transport.kind(),
            client_secret_expires_at: self.secret_expiry.expires_at,
            warnings: self.secret_expiry.warning(now).into_iter().collect(),
        })
    }

    /// Writes buffered send counters to the store (every second, and at shutdown).
    pub async fn flush_counters(&self) {
        self.tallies.flush(&self.store, self.clock.now()).await;
    }

    /// Forgets a mailbox's tokens and pending sign-ins.
    pub async fn disconnect(&self, mailbox: &Mailbox) -> Result<(), MailerError> {
        let known = self.store.disconnect(mailbox, self.clock.now()).await?;
        self.transport.forget(mailbox);
        tracing::info!(
            mailbox_domain = mailbox.domain(),
            known,
            "mailbox disconnected"
        );
        Ok(())
    }

    /// Periodic upkeep: purges expired keys and links, publishes the mailbox-state gauge, and
    /// repeats the client secret's expiry warning once a day.
    pub async fn maintain(&self) {
        let now = self.clock.now();
        self.flush_counters().await;
        match self.store.purge_expired(now).await {
            Ok(0) => {}
            Ok(purged) => {
                tracing::debug!(purged, "expired idempotency keys and sign-in links purged")
            }
            Err(error) => tracing::warn!(%error, "purging expired rows failed"),
        }
        match self.store.mailboxes(now).await {
            Ok(all) => publish_state_counts(&all),
            Err(error) => tracing::warn!(%error, "cannot publish mailbox state metrics"),
        }
        self.warn_about_secret_expiry();
    }

    /// Logs the client secret's expiry warning (error once expired), at most once a day.
    pub fn warn_about_secret_expiry(&self) {
        let now = self.clock.now();
        let Some(warning) = self.secret_expiry.warning(now) else {
            return;
        };
        let mut last = self
            .secret_warned_on
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *last == Some(now.date_naive()) {
            return;
        }
        *last = Some(now.date_naive());
        if self.secret_expiry.expired(now) {
            tracing::error!("{warning}");
        } else {
            tracing::warn!("{warning}");
        }
    }
}

/// One line per SendMail: what was sent (by domain), its id, and how it ended.
fn log_outcome(
    mailbox: &Mailbox,
    request: &SendRequest,
    message_id: &str,
    outcome: &str,
    result: &Result<SendReceipt, MailerError>,
    duration: std::time::Duration,
) {
    let duration_ms = duration.as_secs_f64() * 1000.0;
    let recipient_domains = request.message.recipient_domains().join(",");
    match result {
        Ok(receipt) => tracing::info!(
            rpc = "SendMail",
            message_id = receipt.message_id,
            mailbox_domain = mailbox.domain(),
            recipient_domains,
            attachments = request.message.attachments().len(),
            outcome,
            duration_ms,
            "message accepted"
        ),
        Err(error) => tracing::warn!(
            rpc = "SendMail",
            message_id,
            mailbox_domain = mailbox.domain(),
            recipient_domains,
            code = error.code_name(),
            error = crate::telemetry::redact_addresses(&error.to_string()),
            duration_ms,
            "message not sent"
        ),
    }
}

fn as_sandbox_mailbox(mut record: MailboxRecord) -> MailboxRecord {
    if record.state == ConnectionState::NotConnected {
        record.state = ConnectionState::Connected;
        record.account = Some(record.mailbox.to_string());
    }
    record
}

fn publish_state_counts(records: &[MailboxRecord]) {
    let count = |state: ConnectionState| records.iter().filter(|r| r.state == state).count();
    metrics::mailboxes(&[
        ("not_connected", count(ConnectionState::NotConnected)),
        ("pending", count(ConnectionState::Pending)),
        ("connected", count(ConnectionState::Connected)),
        (
            "reauthorization_required",
            count(ConnectionState::ReauthorizationRequired),
        ),
    ]);
}
