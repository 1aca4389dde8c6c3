//! The Graph transport: sends as the mailbox's signed-in user, from its primary SMTP address.
//!
//! - The wire form is chosen by [`payload::plan`]; the retry policy, the 401 refresh and the
//!   concurrency places are in `policy`.
//! - Every message carries a marker Graph keeps: its `internetMessageId`/`Message-ID`,
//!   `<message_id@sending domain>`. When a sending call is answered ambiguously the message is
//!   never resent; if the mailbox granted a read permission and keeps a copy, the service looks
//!   for the marker in Sent Items for a short while: found means sent.
//! - At most four Graph requests per mailbox are in flight (Outlook's limit, shared between
//!   replicas on PostgreSQL); further ones wait for a place instead of provoking 429s.

use std::{
    sync::{Mutex, atomic::AtomicBool},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

use super::{
    GraphClient,
    limiter::MailboxLimiter,
    payload::{self, DraftAttachment, Plan, UPLOAD_CHUNK},
    policy::{AttemptError, Effect, Session},
};
use crate::{
    clock::SharedClock,
    domain::{Attachment, Mailbox, OutgoingMessage, human_bytes},
    metrics,
    oauth::{AccessToken, TokenManager},
    retry::Backoff,
    settings::GraphSettings,
    transport::{SendError, Transport},
};

/// The backoff of Graph calls: 1 s, 2 s, 4 s … capped at 30 s, full jitter.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// The delegated permissions that let the service read Sent Items.
const READ_PERMISSIONS: [&str; 3] = ["Mail.ReadBasic", "Mail.Read", "Mail.ReadWrite"];

/// How often Sent Items is looked at after an ambiguous answer.
const LOOKUP_INTERVAL: Duration = Duration::from_secs(1);

/// Sends through Microsoft Graph.
#[derive(Debug)]
pub struct GraphTransport {
    pub(super) client: GraphClient,
    pub(super) tokens: std::sync::Arc<TokenManager>,
    clock: SharedClock,
    pub(super) backoff: Backoff,
    pub(super) limiter: MailboxLimiter,
    reconcile_window: Duration,
    blocked_pause: Duration,
}

impl GraphTransport {
    pub fn new(
        client: GraphClient,
        tokens: std::sync::Arc<TokenManager>,
        clock: SharedClock,
        settings: &GraphSettings,
        limiter: MailboxLimiter,
    ) -> Self {
        Self {
            client,
            tokens,
            clock,
            backoff: Backoff {
                base: BACKOFF_BASE,
                cap: BACKOFF_CAP,
                max_attempts: settings.retry_max_attempts,
                budget: Some(settings.retry_budget),
            },
            limiter,
            reconcile_window: settings.reconcile_window,
            blocked_pause: settings.blocked_pause,
        }
    }

    fn session(&self, mailbox: &Mailbox, message_id: &str, token: AccessToken) -> Session {
        Session {
            mailbox: mailbox.clone(),
            message_id: message_id.to_owned(),
            token: Mutex::new(token),
            started: Instant::now(),
            refreshed_after_401: AtomicBool::new(false),
            blocked_until: self.clock.now()
                + chrono::Duration::from_std(self.blocked_pause).unwrap_or_default(),
        }
    }

    async fn send_through_draft(
        &self,
        session: &Session,
        draft: &payload::Payload,
        attachments: &[DraftAttachment],
    ) -> Result<(), SendError> {
        let client = &self.client;
        let id = session.message_id.as_str();
        let draft_id = self
            .call(session, Effect::Prepares, |token| async move {
                client.create_draft(&token.secret, draft, id).await
            })
            .await?;
        tracing::debug!(
            message_id = id,
            attachments = attachments.len(),
            "draft created"
        );
        if let Err(error) = self.attach_all(session, &draft_id, attachments).await {
            self.delete_draft(session, &draft_id).await;
            return Err(error);
        }
        let draft_id = draft_id.as_str();
        self.call(session, Effect::SendsDraft, |token| async move {
            client.send_draft(&token.secret, draft_id, id).await
        })
        .await
    }

    async fn attach_all(
        &self,
        session: &Session,
        draft_id: &str,
        attachments: &[DraftAttachment],
    ) -> Result<(), SendError> {
        let client = &self.client;
        let id = session.message_id.as_str();
        for attachment in attachments {
            match attachment {
                DraftAttachment::Post { body, .. } => {
                    self.call(session, Effect::Prepares, |token| {
                        let body = body.clone();
                        async move {
                            client
                                .add_attachment(&token.secret, draft_id, body, id)
                                .await
                        }
                    })
                    .await?;
                }
                DraftAttachment::Upload(attachment) => {
                    self.upload(session, draft_id, attachment).await?;
                }
            }
        }
        Ok(())
    }

    async fn upload(
        &self,
        session: &Session,
        draft_id: &str,
        attachment: &Attachment,
    ) -> Result<(), SendError> {
        let client = &self.client;
        let id = session.message_id.as_str();
        let body = payload::upload_session_body(attachment);
        let upload_url = self
            .call(session, Effect::Prepares, |token| {
                let body = body.clone();
                async move {
                    client
                        .create_upload_session(&token.secret, draft_id, body, id)
                        .await
                }
            })
            .await?;
        let total = attachment.content.len() as u64;
        let mut start = 0usize;
        while start < attachment.content.len() {
            let end = (start + UPLOAD_CHUNK).min(attachment.content.len());
            // A slice of the request's own buffer: no copy of the attachment per chunk.
            let chunk = attachment.content.slice(start..end);
            let url = &upload_url;
            self.call(session, Effect::Prepares, |_| {
                let chunk = chunk.clone();
                async move {
                    client
                        .upload_chunk(url, chunk, start as u64, total, id)
                        .await
                }
            })
            .await?;
            start = end;
        }
        Ok(())
    }

    async fn delete_draft(&self, session: &Session, draft_id: &str) {
        let client = &self.client;
        let id = session.message_id.as_str();
        let deleted = self
            .call(session, Effect::Prepares, |token| async move {
                client.delete_draft(&token.secret, draft_id, id).await
            })
            .await;
        if let Err(error) = deleted {
            tracing::warn!(
                message_id = id,
                error = crate::telemetry::redact_addresses(&error.to_string()),
                "could not delete the draft of a failed send; it stays in Drafts"
            );
        }
    }

    /// After an ambiguous answer: looks for the message's marker in Sent Items until it shows
    /// or the window closes. Found: it was sent. Otherwise the outcome stays unknown.
    async fn reconcile(
        &self,
        session: &Session,
        marker: &str,
        keeps_a_copy: bool,
        reason: String,
    ) -> Result<DateTime<Utc>, SendError> {
        let unknown = |detail: String| SendError::OutcomeUnknown {
            message_id: session.message_id.clone(),
            reason: format!("{reason}; {detail}"),
        };
        let token = session.token();
        if !keeps_a_copy || !READ_PERMISSIONS.iter().any(|p| token.has_scope(p)) {
            metrics::ambiguous_send("not_looked_up");
            return Err(unknown(if keeps_a_copy {
                "with the delegated permission Mail.ReadBasic granted, graph-mailer would look \
                 the message up in Sent Items"
                    .to_owned()
            } else {
                "the message keeps no copy in Sent Items (skip_sent_items) to look up".to_owned()
            }));
        }
        let deadline = Instant::now() + self.reconcile_window;
        let client = &self.client;
        let id = session.message_id.as_str();
        while Instant::now() < deadline {
            let pause = LOOKUP_INTERVAL.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause / 2).await;
            let found = self
                .limited(session, &|token: AccessToken| async move {
                    client.is_in_sent_items(&token.secret, marker, id).await
                })
                .await;
            match found {
                Ok(Ok(true)) => {
                    metrics::ambiguous_send("sent");
                    tracing::info!(
                        message_id = id,
                        "Graph's answer was ambiguous; the message is in Sent Items, so it was sent"
                    );
                    return Ok(self.clock.now());
                }
                Ok(Ok(false)) => {}
                Ok(Err(error)) => tracing::debug!(
                    message_id = id,
                    error = ?error,
                    "looking in Sent Items failed; trying again"
                ),
                Err(AttemptError::Final(error)) => return Err(unknown(error.to_string())),
                Err(AttemptError::Call(error)) => {
                    tracing::debug!(message_id = id, error = ?error, "Sent Items lookup failed")
                }
            }
            tokio::time::sleep(pause / 2).await;
        }
        metrics::ambiguous_send("not_found");
        Err(unknown(format!(
            "it was not in Sent Items within {} s",
            self.reconcile_window.as_secs()
        )))
    }
}

#[async_trait::async_trait]
impl Transport for GraphTransport {
    fn name(&self) -> &'static str {
        "graph"
    }

    /// Only mailboxes whose owner signed in can send.
    fn needs_connected_mailboxes(&self) -> bool {
        true
    }

    async fn send(
        &self,
        mailbox: &Mailbox,
        message: &OutgoingMessage,
        message_id: &str,
    ) -> Result<DateTime<Utc>, SendError> {
        let token = self.tokens.access_token(mailbox).await?;
        let from = sending_address(mailbox, &token);
        let plan = payload::plan(message, &from, message_id, self.clock.now())?;
        if matches!(plan, Plan::Draft { .. }) && !token.has_scope("Mail.ReadWrite") {
            return Err(SendError::MissingPermission {
                mailbox: mailbox.clone(),
                permission: "Mail.ReadWrite",
                needed_for: format!("attachments ({})", human_bytes(message.attachment_bytes())),
            });
        }
        let session = self.session(mailbox, message_id, token);
        tracing::debug!(message_id, form = plan.form(), "sending");
        let sent = match &plan {
            Plan::Direct(payload) => {
                let client = &self.client;
                self.call(&session, Effect::SendsMail, |token| async move {
                    client.send_mail(&token.secret, payload, message_id).await
                })
                .await
            }
            Plan::Draft { draft, attachments } => {
                self.send_through_draft(&session, draft, attachments).await
            }
        };
        match sent {
            Ok(()) => Ok(self.clock.now()),
            Err(SendError::OutcomeUnknown { reason, .. }) => {
                let marker = payload::internet_message_id(message_id, &from);
                self.reconcile(&session, &marker, message.save_to_sent_items(), reason)
                    .await
            }
            Err(error) => Err(error),
        }
    }

    async fn find_sent(
        &self,
        mailbox: &Mailbox,
        message_id: &str,
    ) -> Result<Option<bool>, SendError> {
        let token = self.tokens.access_token(mailbox).await?;
        if !READ_PERMISSIONS.iter().any(|p| token.has_scope(p)) {
            return Ok(None);
        }
        let from = sending_address(mailbox, &token);
        let marker = payload::internet_message_id(message_id, &from);
        let session = self.session(mailbox, message_id, token);
        let client = &self.client;
        let marker = marker.as_str();
        let found = self
            .limited(&session, &|token: AccessToken| async move {
                client
                    .is_in_sent_items(&token.secret, marker, message_id)
                    .await
            })
            .await;
        match found {
            Ok(Ok(found)) => Ok(Some(found)),
            Ok(Err(error)) => Err(SendError::NoAnswerWhilePreparing {
                reason: format!("looking in Sent Items: {error:?}"),
            }),
            Err(AttemptError::Final(error)) => Err(error),
            Err(AttemptError::Call(error)) => Err(SendError::NoAnswerWhilePreparing {
                reason: format!("looking in Sent Items: {error:?}"),
            }),
        }
    }

    fn forget(&self, mailbox: &Mailbox) {
        self.tokens.forget(mailbox);
    }
}

/// Graph sends as the account's primary SMTP address whatever the form; MIME must say the
/// same, or Exchange refuses it (ErrorSendAsDenied).
fn sending_address(mailbox: &Mailbox, token: &AccessToken) -> Mailbox {
    token
        .sending_address
        .clone()
        .map_or_else(|| mailbox.clone(), Mailbox::from_stored)
}
