//! Send counters, buffered in memory and written to the store in batches.
//!
//! Writing each send's counter would put a database write (and on SQLite an fsync) on every
//! message's path; Status and the store are at most a second behind instead. Status flushes
//! first, so a replica's own sends are always in its answer, and shutdown flushes last.

use std::{collections::HashMap, sync::Mutex};

use chrono::{DateTime, Utc};

use crate::{
    domain::Mailbox,
    store::{SendTally, Store},
};

/// Counters not yet in the store.
#[derive(Debug, Default)]
pub struct Tallies {
    pending: Mutex<HashMap<Mailbox, SendTally>>,
}

impl Tallies {
    /// Counts one send of `mailbox`.
    pub fn add(&self, mailbox: &Mailbox, outcome: Result<DateTime<Utc>, String>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.entry(mailbox.clone()).or_default().add(outcome);
    }

    /// Writes everything counted so far (creating rows for mailboxes the store does not know
    /// only when `create_rows`). What cannot be written is kept for the next flush.
    pub async fn flush(&self, store: &Store, now: DateTime<Utc>, create_rows: bool) {
        let drained: Vec<(Mailbox, SendTally)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.drain().collect()
        };
        for (mailbox, tally) in drained {
            if let Err(error) = store.record_sends(&mailbox, &tally, now, create_rows).await {
                tracing::warn!(
                    mailbox_domain = mailbox.domain(),
                    error = crate::telemetry::redact_addresses(&error.to_string()),
                    "cannot write send counters; keeping them for the next try"
                );
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                let entry = pending.entry(mailbox).or_default();
                let later = std::mem::take(entry);
                *entry = tally;
                entry.merge(later);
            }
        }
    }
}
