//! The Graph transport: sends as the mailbox's signed-in user.
//!
//! - Tokens come from the refresh engine; a 401 gets one refresh and one retry.
//! - 429, 503 and 504 are retried after `Retry-After` (else exponential backoff with full
//!   jitter) within a budget of attempts and time ([`crate::retry`]).
//! - A request that may have reached Microsoft without an answer is never resent: the caller
//!   learns that the outcome is unknown.
//! - At most four Graph requests per mailbox are in flight (Outlook's limit); further ones
//!   wait for a place instead of provoking 429s.

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

use super::{
    GraphCallError, GraphClient, Plan, is_retryable,
    limiter::MailboxLimiter,
    payload::{self, UPLOAD_CHUNK},
};
use crate::{
    clock::SharedClock,
    domain::{Attachment, Mailbox, OutgoingMessage, ValidationError, human_bytes},
    metrics,
    oauth::{AccessToken, TokenManager},
    retry::{Backoff, Decision, GaveUp, retry},
    settings::GraphSettings,
    transport::{SendError, Transport},
};

/// Whether a call can send mail, which decides what an unanswered request means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// sendMail or sending a draft: no answer means "maybe sent".
    Sends,
    /// Everything else: no answer means "not sent".
    Prepares,
}

/// The backoff of Graph calls: 1 s, 2 s, 4 s … capped at 30 s, full jitter.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Sends through Microsoft Graph.
#[derive(Debug)]
pub struct GraphTransport {
    client: GraphClient,
    tokens: Arc<TokenManager>,
    clock: SharedClock,
    backoff: Backoff,
    limiter: MailboxLimiter,
}

/// One send's state across its Graph calls.
struct Session {
    mailbox: Mailbox,
    message_id: String,
    token: Mutex<AccessToken>,
    /// The retry budget counts from here, across every call of the send.
    started: Instant,
    refreshed_after_401: AtomicBool,
}

impl Session {
    fn token(&self) -> AccessToken {
        self.token.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Why one attempt of a call failed.
enum AttemptError {
    /// Graph's answer, or its absence.
    Call(GraphCallError),
    /// A failure on our side that no retry of this call can mend.
    Final(SendError),
}

impl GraphTransport {
    pub fn new(
        client: GraphClient,
        tokens: Arc<TokenManager>,
        clock: SharedClock,
        settings: &GraphSettings,
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
            limiter: MailboxLimiter::new(settings.mailbox_concurrency, settings.concurrency_wait),
        }
    }

    async fn send_through_draft(
        &self,
        session: &Session,
        draft: &payload::Payload,
        uploads: &[Attachment],
    ) -> Result<(), SendError> {
        let client = &self.client;
        let id = session.message_id.as_str();
        let draft_id = self
            .call(session, Effect::Prepares, |token| async move {
                client.create_draft(&token.secret, draft, id).await
            })
            .await?;
        tracing::debug!(message_id = id, uploads = uploads.len(), "draft created");
        if let Err(error) = self.upload_all(session, &draft_id, uploads).await {
            self.delete_draft(session, &draft_id).await;
            return Err(error);
        }
        let draft_id = draft_id.as_str();
        self.call(session, Effect::Sends, |token| async move {
            client.send_draft(&token.secret, draft_id, id).await
        })
        .await
    }

    async fn upload_all(
        &self,
        session: &Session,
        draft_id: &str,
        uploads: &[Attachment],
    ) -> Result<(), SendError> {
        let client = &self.client;
        let id = session.message_id.as_str();
        for attachment in uploads {
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

    /// One Graph call with the retry policy, the 401 refresh and the concurrency limit.
    async fn call<T, F, Fut>(
        &self,
        session: &Session,
        effect: Effect,
        request: F,
    ) -> Result<T, SendError>
    where
        F: Fn(AccessToken) -> Fut,
        Fut: Future<Output = Result<T, GraphCallError>>,
    {
        let outcome = retry(
            &self.backoff,
            session.started,
            || self.attempt(session, &request),
            decide,
            |error, attempt, delay| {
                if let AttemptError::Call(GraphCallError::Failed(failure)) = error {
                    metrics::graph_retry(if failure.status == 429 {
                        "throttled"
                    } else {
                        "unavailable"
                    });
                } else {
                    metrics::graph_retry("connect_error");
                }
                tracing::info!(
                    message_id = session.message_id,
                    attempt,
                    delay_ms = delay.as_millis() as u64,
                    "retrying a Graph request"
                );
            },
        )
        .await;
        outcome.map_err(|gave_up| give_up(session, effect, gave_up))
    }

    /// One attempt: a place among the mailbox's in-flight requests, the request, and on a 401
    /// (the first of this send) a refreshed token and the request once more.
    async fn attempt<T, F, Fut>(&self, session: &Session, request: &F) -> Result<T, AttemptError>
    where
        F: Fn(AccessToken) -> Fut,
        Fut: Future<Output = Result<T, GraphCallError>>,
    {
        let result = self.limited(session, request).await?;
        match result {
            Err(GraphCallError::Failed(failure))
                if failure.status == 401
                    && !session.refreshed_after_401.swap(true, Ordering::SeqCst) =>
            {
                metrics::graph_retry("unauthorized");
                tracing::info!(
                    message_id = session.message_id,
                    "Graph rejected the access token; refreshing once"
                );
                let fresh = self
                    .tokens
                    .replace_rejected(&session.mailbox, &session.token())
                    .await
                    .map_err(|e| AttemptError::Final(e.into()))?;
                *session.token.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
                self.limited(session, request)
                    .await?
                    .map_err(AttemptError::Call)
            }
            other => other.map_err(AttemptError::Call),
        }
    }

    async fn limited<T, F, Fut>(
        &self,
        session: &Session,
        request: &F,
    ) -> Result<Result<T, GraphCallError>, AttemptError>
    where
        F: Fn(AccessToken) -> Fut,
        Fut: Future<Output = Result<T, GraphCallError>>,
    {
        let _permit = self
            .limiter
            .acquire(&session.mailbox)
            .await
            .map_err(AttemptError::Final)?;
        Ok(request(session.token()).await)
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
        let plan = payload::plan(message, mailbox, message_id, self.clock.now());
        let session = Session {
            mailbox: mailbox.clone(),
            message_id: message_id.to_owned(),
            token: Mutex::new(token),
            started: Instant::now(),
            refreshed_after_401: AtomicBool::new(false),
        };
        match plan {
            Plan::Direct(payload) => {
                tracing::debug!(
                    message_id,
                    form = payload.form(),
                    bytes = payload.bytes().len(),
                    "sending with sendMail"
                );
                let client = &self.client;
                let payload = &payload;
                self.call(&session, Effect::Sends, |token| async move {
                    client.send_mail(&token.secret, payload, message_id).await
                })
                .await?;
            }
            Plan::Draft { draft, uploads } => {
                if !message.save_to_sent_items() {
                    return Err(ValidationError::new(
                        "skip_sent_items",
                        "cannot be honoured for a message with 3 MB or more of attachments: Microsoft \
                         sends those through a draft, which always keeps a copy in Sent Items",
                    )
                    .into());
                }
                if !session.token().has_scope("Mail.ReadWrite") {
                    return Err(SendError::MissingPermission {
                        mailbox: mailbox.clone(),
                        permission: "Mail.ReadWrite",
                        needed_for: format!(
                            "attachments ({})",
                            human_bytes(message.attachment_bytes())
                        ),
                    });
                }
                self.send_through_draft(&session, &draft, &uploads).await?;
            }
        }
        Ok(self.clock.now())
    }

    fn forget(&self, mailbox: &Mailbox) {
        self.tokens.forget(mailbox);
    }
}

/// Which failures of a Graph call are worth another attempt.
fn decide(error: &AttemptError) -> Decision {
    match error {
        AttemptError::Call(GraphCallError::Failed(failure)) if is_retryable(failure.status) => {
            metrics::graph_retry_after(
                failure.status == 429,
                failure.retry_after.map(|d| d.as_secs_f64()),
            );
            Decision::Retry {
                retry_after: failure.retry_after,
            }
        }
        // The request never left: safe to send again.
        AttemptError::Call(GraphCallError::NotSent(_)) => Decision::Retry { retry_after: None },
        _ => Decision::Stop,
    }
}

/// What a call that failed for good means for the send.
fn give_up(session: &Session, effect: Effect, gave_up: GaveUp<AttemptError>) -> SendError {
    let GaveUp {
        error, attempts, ..
    } = gave_up;
    match error {
        AttemptError::Final(error) => error,
        AttemptError::Call(GraphCallError::Failed(failure)) if is_retryable(failure.status) => {
            if failure.status == 429 {
                SendError::Throttled {
                    mailbox: session.mailbox.clone(),
                    attempts,
                    retry_after: failure.retry_after,
                }
            } else {
                SendError::ProviderUnavailable {
                    status: failure.status,
                    attempts,
                    retry_after: failure.retry_after,
                }
            }
        }
        AttemptError::Call(GraphCallError::Failed(failure)) => {
            failure.into_send_error(&session.mailbox)
        }
        AttemptError::Call(GraphCallError::NotSent(reason)) => SendError::Unreachable { reason },
        AttemptError::Call(GraphCallError::Ambiguous(reason)) => match effect {
            Effect::Sends => SendError::OutcomeUnknown {
                message_id: session.message_id.clone(),
                reason,
            },
            Effect::Prepares => SendError::NoAnswerWhilePreparing { reason },
        },
    }
}
