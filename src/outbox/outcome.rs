//! What an attempt's answer means for a queued message and its mailbox's queue.
//!
//! - Sent: SENT.
//! - Ambiguous (the message may have reached Microsoft): UNKNOWN, looked up in Sent Items
//!   before anything else happens to it.
//! - Microsoft asks to wait (429 beyond the retry budget, Exchange stopping the mailbox): the
//!   mailbox's queue pauses, the message waits for it.
//! - The owner must reconnect: the message waits; the mailbox's queue is held until Connect.
//! - Transient (outages, no answer while preparing, a busy mailbox): retried with exponential
//!   backoff and full jitter.
//! - Anything else is permanent: FAILED at once with the operator sentence.
//!
//! Nothing is retried past the maximum age: the message FAILS with its last error.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{
    oauth::TokenError, retry::Backoff, settings::OutboxSettings, store::Outcome,
    transport::SendError,
};

/// The longest wait between two attempts.
const RETRY_CAP: Duration = Duration::from_secs(3600);

/// How long a message whose mailbox must be reconnected waits before it is tried again (the
/// queue is held meanwhile; this only bounds how late a reconnect is noticed).
const RECONNECT_RECHECK: Duration = Duration::from_secs(30);

/// What to do after an attempt.
#[derive(Debug, Clone)]
pub struct Decision {
    pub outcome: Outcome,
    /// Pause the mailbox's queue until then, for this reason.
    pub pause: Option<(DateTime<Utc>, String)>,
}

/// Decides what `result` means for a message accepted at `accepted_at` after `attempts`
/// attempts.
pub fn decide(
    result: Result<DateTime<Utc>, &SendError>,
    attempts: u32,
    accepted_at: DateTime<Utc>,
    now: DateTime<Utc>,
    settings: &OutboxSettings,
) -> Decision {
    let error = match result {
        Ok(at) => {
            return Decision {
                outcome: Outcome::Sent { at },
                pause: None,
            };
        }
        Err(error) => error,
    };
    let text = error.to_string();
    let after = |delay: Duration| now + chrono::Duration::from_std(delay).unwrap_or_default();
    let (next, pause) = match error {
        SendError::OutcomeUnknown { .. } => {
            return Decision {
                outcome: Outcome::Unknown {
                    next: Some(now),
                    error: text,
                    answered: true,
                },
                pause: None,
            };
        }
        SendError::Throttled { retry_after, .. } => {
            let until = after(retry_after.unwrap_or(Duration::from_secs(30)));
            (until, Some((until, text.clone())))
        }
        SendError::SendingBlocked { paused_until, .. } => {
            (*paused_until, Some((*paused_until, text.clone())))
        }
        SendError::Token(
            TokenError::ReauthorizationRequired { .. } | TokenError::NotConnected { .. },
        )
        | SendError::TokenRejected { .. } => (after(RECONNECT_RECHECK), None),
        error if is_transient(error) => {
            let backoff = Backoff {
                base: settings.retry_base,
                cap: RETRY_CAP,
                max_attempts: u32::MAX,
                budget: None,
            };
            // Only a delay Microsoft named; the default hint for callers is not one.
            let asked = match error {
                SendError::ProviderUnavailable { retry_after, .. } => *retry_after,
                _ => None,
            };
            let delay = backoff
                .delay(attempts.max(1), asked)
                .max(Duration::from_millis(100));
            (after(delay), None)
        }
        _ => {
            return Decision {
                outcome: Outcome::Failed { error: text },
                pause: None,
            };
        }
    };
    let deadline = accepted_at + chrono::Duration::from_std(settings.max_age).unwrap_or_default();
    if next > deadline {
        return Decision {
            outcome: Outcome::Failed {
                error: format!(
                    "not sent within {} ({} s); last error: {text}",
                    crate::variables::OUTBOX_MAX_AGE_SECONDS,
                    settings.max_age.as_secs()
                ),
            },
            pause,
        };
    }
    Decision {
        outcome: Outcome::Retry { next, error: text },
        pause,
    }
}

/// Failures worth another attempt later: nothing about the message is wrong.
fn is_transient(error: &SendError) -> bool {
    matches!(
        error,
        SendError::ProviderUnavailable { .. }
            | SendError::Unreachable { .. }
            | SendError::NoAnswerWhilePreparing { .. }
            | SendError::MailboxBusy { .. }
            | SendError::MailboxFull { .. }
            | SendError::Storage(_)
            | SendError::Token(
                TokenError::Unavailable { .. }
                    | TokenError::Store(_)
                    | TokenError::Configuration { .. }
            )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::Mailbox, settings::PacingLimits};

    fn settings() -> OutboxSettings {
        OutboxSettings {
            limits: PacingLimits::default(),
            max_age: Duration::from_secs(3600),
            retention: Duration::from_secs(60),
            workers: 4,
            lease: Duration::from_secs(60),
            retry_base: Duration::from_secs(10),
        }
    }

    fn mailbox() -> Mailbox {
        Mailbox::parse("mailbox", "noreply@contoso.com").unwrap()
    }

    #[test]
    fn each_kind_of_answer_has_its_fate() {
        let now = Utc::now();
        let decide_for = |error: SendError| decide(Err(&error), 1, now, now, &settings());
        let unknown = decide_for(SendError::OutcomeUnknown {
            message_id: "m".into(),
            reason: "504".into(),
        });
        assert!(matches!(unknown.outcome, Outcome::Unknown { .. }));
        let throttled = decide_for(SendError::Throttled {
            mailbox: mailbox(),
            attempts: 4,
            retry_after: Some(Duration::from_secs(20)),
        });
        assert!(matches!(throttled.outcome, Outcome::Retry { .. }));
        assert!(throttled.pause.is_some());
        let outage = decide_for(SendError::Unreachable {
            reason: "refused".into(),
        });
        assert!(matches!(outage.outcome, Outcome::Retry { .. }));
        assert!(outage.pause.is_none());
        let denied = decide_for(SendError::AccessDenied { mailbox: mailbox() });
        assert!(matches!(denied.outcome, Outcome::Failed { .. }));
    }

    #[test]
    fn nothing_is_retried_past_the_maximum_age() {
        let now = Utc::now();
        let accepted = now - chrono::Duration::seconds(3600);
        let error = SendError::Unreachable {
            reason: "refused".into(),
        };
        let decision = decide(Err(&error), 6, accepted, now, &settings());
        match decision.outcome {
            Outcome::Failed { error } => assert!(error.contains("refused"), "{error}"),
            other => panic!("expected FAILED, got {other:?}"),
        }
    }
}
