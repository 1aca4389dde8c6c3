//! What the outbox does besides sending, every second on every replica:
//!
//! - a SENDING message whose replica stopped renewing its lease becomes UNKNOWN: it may have
//!   reached Microsoft;
//! - an UNKNOWN message is looked up in Sent Items by its marker (with a read permission):
//!   there, it is SENT; absent once the look-up window has passed since its attempt began, it
//!   is QUEUED again; without a way to look, it stays UNKNOWN for the operator, never resent;
//! - every five seconds: messages older than the maximum age FAIL, finished ones past retention are
//!   purged (bodies went when they finished), and the queue gauges are set.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};

use super::{Activity, Parts, worker::Workers};
use crate::{
    metrics,
    store::{ClaimedMessage, Outcome, StoreError},
};

/// How often a message of unknown outcome is looked up while its window is open.
const LOOKUP_AGAIN: Duration = Duration::from_secs(2);
/// How often after a failed look-up.
const LOOKUP_RETRY: Duration = Duration::from_secs(30);
/// Ticks between the slower chores.
const SLOW_EVERY: u32 = 5;

/// The recovery pass of one replica.
#[derive(Debug)]
pub struct Recovery {
    parts: Parts,
    activity: Arc<Activity>,
    workers: Arc<Workers>,
    /// How long after an attempt began a message must be absent from Sent Items before it is
    /// sent again.
    reconcile_window: Duration,
    ticks: std::sync::atomic::AtomicU32,
    /// Domains the queue gauges were last set for (an emptied queue is set to 0).
    gauged: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Recovery {
    pub fn new(
        parts: Parts,
        activity: Arc<Activity>,
        workers: Arc<Workers>,
        reconcile_window: Duration,
    ) -> Self {
        Self {
            parts,
            activity,
            workers,
            reconcile_window,
            ticks: std::sync::atomic::AtomicU32::new(0),
            gauged: std::sync::Mutex::default(),
        }
    }

    /// One pass (the periodic runner calls it every second).
    pub async fn run_once(&self) {
        if let Err(error) = self.pass().await {
            tracing::warn!(
                error = crate::telemetry::redact_addresses(&error.to_string()),
                "outbox: recovery pass failed"
            );
        }
    }

    async fn pass(&self) -> Result<(), StoreError> {
        let store = &self.parts.store;
        let now = self.parts.clock.now();
        let orphans = store.orphans_to_unknown(Utc::now()).await?;
        if orphans > 0 {
            tracing::warn!(
                orphans,
                "outbox: messages of a stopped replica are looked up"
            );
            self.activity.changed();
        }
        let lease_until =
            Utc::now() + chrono::Duration::from_std(self.parts.settings.lease).unwrap_or_default();
        let unknown = store
            .claim_unknown(&self.workers.holder, lease_until, now, 20)
            .await?;
        for message in unknown {
            let outcome = self.reconcile(&message, now).await;
            store
                .finish_attempt(
                    &message.message_id,
                    &self.workers.holder,
                    &outcome,
                    None,
                    now,
                )
                .await?;
            self.activity.changed();
        }
        let tick = self
            .ticks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if tick.is_multiple_of(SLOW_EVERY) {
            self.slow_chores(now).await?;
        }
        Ok(())
    }

    /// What a look-up in Sent Items says of a message of unknown outcome.
    async fn reconcile(&self, message: &ClaimedMessage, now: DateTime<Utc>) -> Outcome {
        let later = |delay: Duration| now + chrono::Duration::from_std(delay).unwrap_or_default();
        let keeps_copy = match self.workers.load(message).await {
            Ok(parsed) => parsed.save_to_sent_items(),
            Err(_) => true,
        };
        if !keeps_copy {
            metrics::outbox_reconciliation("unknown");
            return Outcome::Unknown {
                next: None,
                error: "the outcome is unknown and the message keeps no copy in Sent Items \
                        (skip_sent_items) to look it up by: check whether it arrived before \
                        queuing it again"
                    .to_owned(),
                answered: message.sending_since.is_none(),
            };
        }
        let found = self
            .parts
            .post_office
            .find_sent(&message.mailbox, &message.message_id)
            .await;
        match found {
            Ok(Some(true)) => {
                metrics::outbox_reconciliation("sent");
                tracing::info!(
                    message_id = message.message_id,
                    "outbox: found in Sent Items; it was sent"
                );
                Outcome::Sent { at: now }
            }
            Ok(Some(false)) => {
                // A stopped replica's message (it has `sending_since`) may never have left:
                // absent long enough, it is sent again. One Microsoft answered ambiguously
                // reached Microsoft: it is only ever looked for.
                let window = chrono::Duration::from_std(self.reconcile_window).unwrap_or_default();
                let absent_long_enough = message
                    .sending_since
                    .is_some_and(|since| now - since >= window);
                let too_old = now - message.accepted_at
                    >= chrono::Duration::from_std(self.parts.settings.max_age).unwrap_or_default();
                if too_old {
                    metrics::outbox_reconciliation("unknown");
                    Outcome::Unknown {
                        next: None,
                        error: "the outcome stays unknown: the message did not show in Sent \
                                Items within the maximum age; check the mailbox"
                            .to_owned(),
                        answered: message.sending_since.is_none(),
                    }
                } else if absent_long_enough {
                    metrics::outbox_reconciliation("resent");
                    Outcome::Retry {
                        next: now,
                        error: format!(
                            "not in Sent Items {} s after its attempt began: sending it again",
                            self.reconcile_window.as_secs()
                        ),
                    }
                } else {
                    Outcome::Unknown {
                        next: Some(later(LOOKUP_AGAIN)),
                        error: "the outcome is unknown; looking for it in Sent Items".to_owned(),
                        answered: message.sending_since.is_none(),
                    }
                }
            }
            Ok(None) => {
                metrics::outbox_reconciliation("unknown");
                Outcome::Unknown {
                    next: None,
                    error: "the outcome is unknown: grant the delegated permission \
                            Mail.ReadBasic so graph-mailer can look the message up in Sent \
                            Items; until then check the mailbox before queuing it again"
                        .to_owned(),
                    answered: message.sending_since.is_none(),
                }
            }
            Err(error) => Outcome::Unknown {
                next: Some(later(LOOKUP_RETRY)),
                error: format!("the outcome is unknown; looking it up failed: {error}"),
                answered: message.sending_since.is_none(),
            },
        }
    }

    async fn slow_chores(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let store = &self.parts.store;
        let max_age = chrono::Duration::from_std(self.parts.settings.max_age).unwrap_or_default();
        let expired = store.fail_expired(now - max_age, now).await?;
        if expired > 0 {
            tracing::warn!(
                expired,
                "outbox: messages not sent within the maximum age failed"
            );
            self.activity.changed();
        }
        let retention =
            chrono::Duration::from_std(self.parts.settings.retention).unwrap_or_default();
        let purged = store.purge_outbox(now - retention).await?;
        if purged > 0 {
            tracing::info!(purged, "outbox: finished messages past retention purged");
        }
        let mut by_domain: HashMap<String, (u64, DateTime<Utc>)> = HashMap::new();
        for (mailbox, queued, oldest) in store.queue_depths().await? {
            let entry = by_domain
                .entry(mailbox.domain().to_owned())
                .or_insert((0, oldest));
            entry.0 += queued;
            entry.1 = entry.1.min(oldest);
        }
        let mut gauged = self.gauged.lock().unwrap_or_else(|p| p.into_inner());
        for emptied in gauged.iter().filter(|d| !by_domain.contains_key(*d)) {
            metrics::outbox_queue(emptied, 0, 0.0);
        }
        *gauged = by_domain.keys().cloned().collect();
        for (domain, (queued, oldest)) in by_domain {
            metrics::outbox_queue(
                &domain,
                queued,
                (now - oldest).num_milliseconds() as f64 / 1e3,
            );
        }
        Ok(())
    }
}
