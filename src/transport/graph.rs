//! The Graph transport: sends as the mailbox's signed-in user.
//!
//! - Tokens come from the refresh engine; a 401 gets one refresh and one retry.
//! - 429, 503 and 504 are retried after `Retry-After` (else exponential backoff with full
//!   jitter) within a budget of attempts and time.
//! - A request that may have reached Microsoft without an answer is never resent: the caller
//!   learns that the outcome is unknown.
//! - At most four Graph requests per mailbox are in flight (Outlook's limit); further ones
//!   wait for a place instead of provoking 429s.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    clock::SharedClock,
    domain::{Attachment, Mailbox, OutgoingMessage, ValidationError},
    graph::{
        GraphCallError, GraphClient, GraphFailure, Plan, is_retryable, map_failure,
        payload::{self, UPLOAD_CHUNK},
    },
    mailer::MailerError,
    metrics,
    oauth::{AccessToken, TokenManager},
    settings::GraphSettings,
};

/// Whether a call can send mail, which decides what an unanswered request means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// sendMail or sending a draft: no answer means "maybe sent".
    Sends,
    /// Everything else: no answer means "not sent".
    Prepares,
}

/// Sends through Microsoft Graph.
#[derive(Debug)]
pub struct GraphTransport {
    client: GraphClient,
    tokens: Arc<TokenManager>,
    clock: SharedClock,
    settings: GraphSettings,
    limiter: MailboxLimiter,
}

/// One send's state across its Graph calls.
struct Attempts {
    mailbox: Mailbox,
    message_id: String,
    token: AccessToken,
    started: Instant,
    refreshed_after_401: bool,
}

impl GraphTransport {
    pub fn new(
        client: GraphClient,
        tokens: Arc<TokenManager>,
        clock: SharedClock,
        settings: GraphSettings,
    ) -> Self {
        let limiter = MailboxLimiter::new(settings.mailbox_concurrency, settings.concurrency_wait);
        Self {
            client,
            tokens,
            clock,
            settings,
            limiter,
        }
    }

    /// Forgets the mailbox's cached token.
    pub fn forget(&self, mailbox: &Mailbox) {
        self.tokens.forget(mailbox);
    }

    /// Sends; returns when Graph accepted the message.
    pub async fn send(
        &self,
        mailbox: &Mailbox,
        message: &OutgoingMessage,
        message_id: &str,
    ) -> Result<DateTime<Utc>, MailerError> {
        let token = self.tokens.access_token(mailbox).await?;
        let plan = payload::plan(message, mailbox, message_id, self.clock.now());
        let mut attempts = Attempts {
            mailbox: mailbox.clone(),
            message_id: message_id.to_owned(),
            token,
            started: Instant::now(),
            refreshed_after_401: false,
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
                self.call(&mut attempts, Effect::Sends, |token| {
                    let payload = &payload;
                    let id = message_id.to_owned();
                    async move { client.send_mail(&token.secret, payload, &id).await }
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
                if !attempts.token.has_scope("Mail.ReadWrite") {
                    return Err(MailerError::FailedPrecondition(format!(
                        "this message's attachments ({}) need Microsoft's draft and upload-session \
                         path, which needs the delegated permission Mail.ReadWrite: add it to the app \
                         registration and to GRAPH_MAILER_GRAPH_SCOPES, then call Connect again for \
                         {mailbox} with force_consent",
                        crate::domain::human_bytes(message.attachment_bytes())
                    )));
                }
                self.send_through_draft(&mut attempts, &draft, &uploads)
                    .await?;
            }
        }
        Ok(self.clock.now())
    }

    async fn send_through_draft(
        &self,
        attempts: &mut Attempts,
        draft: &payload::Payload,
        uploads: &[Attachment],
    ) -> Result<(), MailerError> {
        let client = &self.client;
        let message_id = attempts.message_id.clone();
        let draft_id = self
            .call(attempts, Effect::Prepares, |token| {
                let id = message_id.clone();
                async move { client.create_draft(&token.secret, draft, &id).await }
            })
            .await?;
        tracing::debug!(message_id, uploads = uploads.len(), "draft created");
        let prepared = self.upload_all(attempts, &draft_id, uploads).await;
        if let Err(error) = prepared {
            self.delete_draft(attempts, &draft_id).await;
            return Err(error);
        }
        self.call(attempts, Effect::Sends, |token| {
            let id = message_id.clone();
            let draft_id = draft_id.clone();
            async move { client.send_draft(&token.secret, &draft_id, &id).await }
        })
        .await
    }

    async fn upload_all(
        &self,
        attempts: &mut Attempts,
        draft_id: &str,
        uploads: &[Attachment],
    ) -> Result<(), MailerError> {
        let client = &self.client;
        let message_id = attempts.message_id.clone();
        for attachment in uploads {
            let body = payload::upload_session_body(attachment);
            let upload_url = self
                .call(attempts, Effect::Prepares, |token| {
                    let (id, body) = (message_id.clone(), body.clone());
                    async move {
                        client
                            .create_upload_session(&token.secret, draft_id, body, &id)
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
                self.call(attempts, Effect::Prepares, |_| {
                    let (id, chunk) = (message_id.clone(), chunk.clone());
                    async move {
                        client
                            .upload_chunk(url, chunk, start as u64, total, &id)
                            .await
                    }
                })
                .await?;
                start = end;
            }
        }
        Ok(())
    }

    async fn delete_draft(&self, attempts: &mut Attempts, draft_id: &str) {
        let client = &self.client;
        let message_id = attempts.message_id.clone();
        let deleted = self
            .call(attempts, Effect::Prepares, |token| {
                let id = message_id.clone();
                async move { client.delete_draft(&token.secret, draft_id, &id).await }
            })
            .await;
        if let Err(error) = deleted {
            tracing::warn!(
                message_id,
                error = crate::telemetry::redact_addresses(&error.to_string()),
                "could not delete the draft of a failed send; it stays in Drafts"
            );
        }
    }

    /// One Graph call with the retry policy, the 401 refresh and the concurrency limit.
    async fn call<T, F, Fut>(
        &self,
        attempts: &mut Attempts,
        effect: Effect,
        mut request: F,
    ) -> Result<T, MailerError>
    where
        F: FnMut(AccessToken) -> Fut,
        Fut: Future<Output = Result<T, GraphCallError>>,
    {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let permit = self.limiter.acquire(&attempts.mailbox).await?;
            let result = request(attempts.token.clone()).await;
            drop(permit);
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let delay = match error {
                GraphCallError::Failed(failure)
                    if failure.status == 401 && !attempts.refreshed_after_401 =>
                {
                    metrics::graph_retry("unauthorized");
                    tracing::info!(
                        message_id = attempts.message_id,
                        "Graph rejected the access token; refreshing once"
                    );
                    attempts.refreshed_after_401 = true;
                    attempts.token = self
                        .tokens
                        .replace_rejected(&attempts.mailbox, &attempts.token)
                        .await?;
                    continue;
                }
                GraphCallError::Failed(failure) if is_retryable(failure.status) => {
                    let throttled = failure.status == 429;
                    metrics::graph_retry_after(
                        throttled,
                        failure.retry_after.map(|d| d.as_secs_f64()),
                    );
                    let delay = failure.retry_after.unwrap_or_else(|| self.backoff(attempt));
                    if !self.may_retry(attempts, attempt, delay) {
                        return Err(exhausted(&failure, &attempts.mailbox, attempt));
                    }
                    metrics::graph_retry(if throttled {
                        "throttled"
                    } else {
                        "unavailable"
                    });
                    delay
                }
                GraphCallError::Failed(failure) => {
                    return Err(map_failure(&failure, &attempts.mailbox));
                }
                GraphCallError::NotSent(reason) => {
                    let delay = self.backoff(attempt);
                    if !self.may_retry(attempts, attempt, delay) {
                        return Err(MailerError::unavailable(format!(
                            "Microsoft Graph cannot be reached ({reason}); nothing was sent — retry later"
                        )));
                    }
                    metrics::graph_retry("connect_error");
                    delay
                }
                GraphCallError::Ambiguous(reason) => {
                    return Err(match effect {
                        Effect::Sends => MailerError::OutcomeUnknown(format!(
                            "no answer from Microsoft Graph after the message was sent ({reason}): \
                             it may or may not have been accepted, so it was not resent; check \
                             the mailbox's Sent Items before sending again (message_id {})",
                            attempts.message_id
                        )),
                        Effect::Prepares => MailerError::unavailable(format!(
                            "no answer from Microsoft Graph while preparing the message ({reason}); \
                             nothing was sent — retry later"
                        )),
                    });
                }
            };
            tracing::info!(
                message_id = attempts.message_id,
                attempt,
                delay_ms = delay.as_millis() as u64,
                "retrying a Graph request"
            );
            tokio::time::sleep(delay).await;
        }
    }

    fn may_retry(&self, attempts: &Attempts, attempt: u32, delay: Duration) -> bool {
        attempt < self.settings.retry_max_attempts
            && attempts.started.elapsed() + delay <= self.settings.retry_budget
    }

    /// Exponential backoff with full jitter: 1 s, 2 s, 4 s … capped at 30 s, times a random
    /// factor in [0, 1).
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = Duration::from_secs(1)
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(Duration::from_secs(30));
        ceiling.mul_f64(rand::rng().random_range(0.0..1.0))
    }
}

fn exhausted(failure: &GraphFailure, mailbox: &Mailbox, attempts: u32) -> MailerError {
    let retry_after = failure.retry_after.unwrap_or(Duration::from_secs(30));
    let hint = match failure.retry_after {
        Some(after) => format!("Microsoft asks to retry after {} s", after.as_secs()),
        None => "retry in about 30 s".to_owned(),
    };
    if failure.status == 429 {
        MailerError::ResourceExhausted {
            message: format!(
                "Microsoft Graph is throttling {mailbox} (429 after {attempts} attempts); nothing \
                 was sent: {hint}"
            ),
            retry_after: Some(retry_after),
        }
    } else {
        MailerError::Unavailable {
            message: format!(
                "Microsoft Graph is unavailable ({} after {attempts} attempts); nothing was sent: {hint}",
                failure.status
            ),
            retry_after: Some(retry_after),
        }
    }
}

/// Limits in-flight Graph requests per mailbox.
#[derive(Debug)]
struct MailboxLimiter {
    permits: usize,
    wait: Duration,
    semaphores: Mutex<HashMap<Mailbox, Arc<Semaphore>>>,
}

impl MailboxLimiter {
    fn new(permits: usize, wait: Duration) -> Self {
        Self {
            permits,
            wait,
            semaphores: Mutex::new(HashMap::new()),
        }
    }

    async fn acquire(&self, mailbox: &Mailbox) -> Result<OwnedSemaphorePermit, MailerError> {
        let semaphore = {
            let mut map = self.semaphores.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(mailbox.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.permits)))
                .clone()
        };
        match tokio::time::timeout(self.wait, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(MailerError::Unavailable {
                message: format!(
                    "{mailbox} already has {} requests in flight to Microsoft Graph (Outlook's \
                     limit) and none finished within {} s; nothing was sent — retry later",
                    self.permits,
                    self.wait.as_secs()
                ),
                retry_after: Some(Duration::from_secs(5)),
            }),
        }
    }
}
