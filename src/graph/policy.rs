//! How one Graph call is made and what its failure means: the retry policy, the one refresh
//! after a 401, the mailbox's concurrency places.
//!
//! A call that prepares a message (drafts, attachments, uploads) is retried on 429, 503 and 504
//! after `Retry-After` (else exponential backoff with full jitter) within a budget of attempts
//! and time ([`crate::retry`]). A call that sends is retried only when Microsoft certainly did
//! not process it: a 429 (throttled requests are not processed) or a request that never left.
//! Any other failure of a sending call is ambiguous: Microsoft's Q&A reports `sendMail`
//! answering 503, 504 or `UnknownError` after the mail went out, and a draft that was sent is
//! gone, so sending it again answers 404.

use std::{
    future::Future,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use chrono::{DateTime, Utc};

use super::{GraphCallError, GraphTransport, is_retryable};
use crate::{
    domain::Mailbox,
    metrics,
    oauth::AccessToken,
    retry::{Decision, GaveUp, retry},
    transport::SendError,
};

/// What a call does, which decides what its failures mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Effect {
    /// `sendMail`: any answer but success, 429 or a certain refusal may mean "sent".
    SendsMail,
    /// Sending a draft: as `sendMail`, and a 404 (the draft is gone) may mean "sent" too.
    SendsDraft,
    /// Everything else: no answer means "not sent".
    Prepares,
}

impl Effect {
    fn sends(self) -> bool {
        self != Self::Prepares
    }
}

/// One send's state across its Graph calls.
pub(super) struct Session {
    pub(super) mailbox: Mailbox,
    pub(super) message_id: String,
    pub(super) token: Mutex<AccessToken>,
    /// The retry budget counts from here, across every call of the send.
    pub(super) started: Instant,
    pub(super) refreshed_after_401: AtomicBool,
    /// Until when the mailbox is held back if Exchange says it stopped it sending.
    pub(super) blocked_until: DateTime<Utc>,
}

impl Session {
    pub(super) fn token(&self) -> AccessToken {
        self.token.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Why one attempt of a call failed.
pub(super) enum AttemptError {
    /// Graph's answer, or its absence.
    Call(GraphCallError),
    /// A failure on our side that no retry of this call can mend.
    Final(SendError),
}

impl GraphTransport {
    /// One Graph call with the retry policy, the 401 refresh and the concurrency limit.
    pub(super) async fn call<T, F, Fut>(
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
            |error| decide(effect, error),
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

    /// The request, in one of the mailbox's places. A 429 for the mailbox's concurrency makes
    /// every send of the mailbox wait out its Retry-After before taking a place.
    pub(super) async fn limited<T, F, Fut>(
        &self,
        session: &Session,
        request: &F,
    ) -> Result<Result<T, GraphCallError>, AttemptError>
    where
        F: Fn(AccessToken) -> Fut,
        Fut: Future<Output = Result<T, GraphCallError>>,
    {
        let _place = self
            .limiter
            .acquire(&session.mailbox)
            .await
            .map_err(AttemptError::Final)?;
        let result = request(session.token()).await;
        if let Err(GraphCallError::Failed(failure)) = &result
            && failure.is_mailbox_concurrency()
        {
            self.limiter.back_off(
                &session.mailbox,
                failure
                    .retry_after
                    .unwrap_or(std::time::Duration::from_secs(1)),
            );
        }
        Ok(result)
    }
}

/// Which failures of a Graph call are worth another attempt.
fn decide(effect: Effect, error: &AttemptError) -> Decision {
    match error {
        AttemptError::Call(GraphCallError::Failed(failure)) if failure.blocks_sending() => {
            Decision::Stop
        }
        AttemptError::Call(GraphCallError::Failed(failure))
            if is_retryable(failure.status) && (failure.status == 429 || !effect.sends()) =>
        {
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
    let unknown = |reason: String| SendError::OutcomeUnknown {
        message_id: session.message_id.clone(),
        reason,
    };
    match error {
        AttemptError::Final(error) => error,
        AttemptError::Call(GraphCallError::Failed(failure)) if failure.blocks_sending() => {
            failure.into_send_error(&session.mailbox, session.blocked_until)
        }
        AttemptError::Call(GraphCallError::Failed(failure)) if failure.status == 429 => {
            SendError::Throttled {
                mailbox: session.mailbox.clone(),
                attempts,
                retry_after: failure.retry_after,
            }
        }
        AttemptError::Call(GraphCallError::Failed(failure))
            if effect.sends()
                && (failure.status >= 500
                    || (effect == Effect::SendsDraft && failure.status == 404)) =>
        {
            unknown(format!(
                "Graph answered {} {} ({})",
                failure.status,
                if failure.error.code.is_empty() {
                    "without a code"
                } else {
                    &failure.error.code
                },
                failure.ids()
            ))
        }
        AttemptError::Call(GraphCallError::Failed(failure)) if is_retryable(failure.status) => {
            SendError::ProviderUnavailable {
                status: failure.status,
                attempts,
                retry_after: failure.retry_after,
            }
        }
        AttemptError::Call(GraphCallError::Failed(failure)) => {
            failure.into_send_error(&session.mailbox, session.blocked_until)
        }
        AttemptError::Call(GraphCallError::NotSent(reason)) => SendError::Unreachable { reason },
        AttemptError::Call(GraphCallError::Ambiguous(reason)) if effect.sends() => unknown(reason),
        AttemptError::Call(GraphCallError::Ambiguous(reason)) => {
            SendError::NoAnswerWhilePreparing { reason }
        }
    }
}
