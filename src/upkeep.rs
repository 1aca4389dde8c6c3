//! Background upkeep of the service as a whole: expired idempotency keys and sign-in links
//! are purged, the mailbox-state gauge is published, and the client secret's expiry warning is
//! repeated once a day. (Tokens have their own pass: `oauth::token_upkeep`.)

use std::sync::Mutex;

use chrono::NaiveDate;

use crate::{
    clock::SharedClock,
    metrics,
    oauth::SecretExpiry,
    store::{ConnectionState, MailboxRecord, Store},
};

/// The periodic chores.
#[derive(Debug)]
pub struct Upkeep {
    store: Store,
    clock: SharedClock,
    secret_expiry: SecretExpiry,
    secret_warned_on: Mutex<Option<NaiveDate>>,
}

impl Upkeep {
    pub fn new(store: Store, clock: SharedClock, secret_expiry: SecretExpiry) -> Self {
        Self {
            store,
            clock,
            secret_expiry,
            secret_warned_on: Mutex::new(None),
        }
    }

    /// One pass of every chore.
    pub async fn run_once(&self) {
        let now = self.clock.now();
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
    fn warn_about_secret_expiry(&self) {
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

fn publish_state_counts(records: &[MailboxRecord]) {
    let counts: Vec<(&'static str, usize)> = ConnectionState::ALL
        .iter()
        .map(|state| {
            let count = records.iter().filter(|r| r.state == *state).count();
            (state.as_str(), count)
        })
        .collect();
    metrics::mailboxes(&counts);
}
