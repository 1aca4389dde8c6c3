//! Leases: short, expiring claims in the store that several replicas respect, held without a
//! transaction or a connection while the holder talks to Microsoft.
//!
//! - The **token lease** (columns of `mailboxes`): one refresh, Connect or Disconnect of a
//!   mailbox at a time. A transaction held across Microsoft's token call (which can take
//!   minutes during an Entra slowdown) would pin a pooled connection per refresh and lose the
//!   rotated refresh token if the transaction died; a lease pins nothing, and a holder that dies
//!   stops blocking when the lease expires.
//! - **Mailbox slots** (`mailbox_slots`): Outlook's four concurrent requests per mailbox, counted
//!   across replicas. A request holds a slot while in flight; a slot whose holder died expires.
//!
//! Lease times are wall-clock milliseconds, not the service's (testable) clock: they measure
//! how long a holder may take, not what time the tokens think it is.

use std::time::{Duration, Instant};

use super::{Store, StoreError};
use crate::domain::Mailbox;

/// How long one token lease lasts: longer than a refresh with all its retries (three attempts
/// of at most 30 s each, with backoff).
pub const TOKEN_LEASE: Duration = Duration::from_secs(120);

/// How often a waiter looks whether a lease is free, at most.
const POLL_CAP: Duration = Duration::from_millis(200);

/// A token lease, released when dropped (or when it expires).
#[derive(Debug)]
pub struct TokenLease {
    store: Store,
    mailbox: Mailbox,
    holder: String,
    released: bool,
}

/// A held mailbox slot, released when dropped.
#[derive(Debug)]
pub struct MailboxSlot {
    store: Store,
    mailbox: Mailbox,
    slot: i64,
    holder: String,
}

fn wall_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Sleeps a little longer each time, up to [`POLL_CAP`].
async fn pause(round: u32) {
    let delay = Duration::from_millis(10u64 << round.min(5)).min(POLL_CAP);
    tokio::time::sleep(delay).await;
}

impl Store {
    /// Takes the mailbox's token lease, waiting while another holder has it (at most a lease
    /// and a bit). `None` when the store has no row for the mailbox (nothing to protect yet).
    pub async fn lease_tokens(&self, mailbox: &Mailbox) -> Result<Option<TokenLease>, StoreError> {
        let holder = uuid::Uuid::new_v4().to_string();
        let give_up = Instant::now() + TOKEN_LEASE + Duration::from_secs(10);
        let mut round = 0;
        loop {
            let now = wall_millis();
            let taken = sqlx::query(
                "UPDATE mailboxes SET token_lease_holder = $2, token_lease_until = $3 \
                 WHERE mailbox = $1 AND (token_lease_until IS NULL OR token_lease_until < $4)",
            )
            .bind(mailbox.as_str())
            .bind(&holder)
            .bind(now + millis(TOKEN_LEASE))
            .bind(now)
            .execute(self.pool())
            .await?
            .rows_affected();
            if taken == 1 {
                return Ok(Some(TokenLease {
                    store: self.clone(),
                    mailbox: mailbox.clone(),
                    holder,
                    released: false,
                }));
            }
            if !self.has_mailbox_row(mailbox).await? {
                return Ok(None);
            }
            if Instant::now() >= give_up {
                return Err(StoreError::LeaseBusy {
                    mailbox: mailbox.to_string(),
                });
            }
            pause(round).await;
            round += 1;
        }
    }

    async fn has_mailbox_row(&self, mailbox: &Mailbox) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 FROM mailboxes WHERE mailbox = $1")
            .bind(mailbox.as_str())
            .fetch_optional(self.pool())
            .await?
            .is_some())
    }

    /// Takes one of the mailbox's `slots` request places, waiting up to `wait`. `lease` bounds
    /// how long a holder that died blocks the slot. `None` when no place freed up in time.
    pub async fn take_mailbox_slot(
        &self,
        mailbox: &Mailbox,
        slots: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<MailboxSlot>, StoreError> {
        let holder = uuid::Uuid::new_v4().to_string();
        let give_up = Instant::now() + wait;
        let slots = i64::try_from(slots.max(1)).unwrap_or(4);
        // Start at a different slot each time so waiters do not all fight over slot 0.
        let first = i64::from(rand::random::<u8>()) % slots;
        let mut round = 0;
        loop {
            let now = wall_millis();
            for offset in 0..slots {
                let slot = (first + offset) % slots;
                let taken = sqlx::query(
                    "INSERT INTO mailbox_slots (mailbox, slot, holder, expires_at) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (mailbox, slot) DO UPDATE \
                       SET holder = excluded.holder, expires_at = excluded.expires_at \
                       WHERE mailbox_slots.expires_at < $5",
                )
                .bind(mailbox.as_str())
                .bind(slot)
                .bind(&holder)
                .bind(now + millis(lease))
                .bind(now)
                .execute(self.pool())
                .await?
                .rows_affected();
                if taken == 1 {
                    return Ok(Some(MailboxSlot {
                        store: self.clone(),
                        mailbox: mailbox.clone(),
                        slot,
                        holder,
                    }));
                }
            }
            if Instant::now() >= give_up {
                return Ok(None);
            }
            pause(round).await;
            round += 1;
        }
    }
}

impl TokenLease {
    /// Gives the lease back now.
    pub async fn release(mut self) -> Result<(), StoreError> {
        self.released = true;
        release_token_lease(&self.store, &self.mailbox, &self.holder).await
    }
}

async fn release_token_lease(
    store: &Store,
    mailbox: &Mailbox,
    holder: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE mailboxes SET token_lease_holder = NULL, token_lease_until = NULL \
         WHERE mailbox = $1 AND token_lease_holder = $2",
    )
    .bind(mailbox.as_str())
    .bind(holder)
    .execute(store.pool())
    .await?;
    Ok(())
}

impl Drop for TokenLease {
    /// A holder that returns early (an error, a cancelled call) gives the lease back in the
    /// background instead of letting others wait for its expiry.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (store, mailbox, holder) = (
            self.store.clone(),
            self.mailbox.clone(),
            std::mem::take(&mut self.holder),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = release_token_lease(&store, &mailbox, &holder).await;
            });
        }
    }
}

impl Drop for MailboxSlot {
    fn drop(&mut self) {
        let (store, mailbox, slot, holder) = (
            self.store.clone(),
            self.mailbox.clone(),
            self.slot,
            std::mem::take(&mut self.holder),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = sqlx::query(
                    "DELETE FROM mailbox_slots WHERE mailbox = $1 AND slot = $2 AND holder = $3",
                )
                .bind(mailbox.as_str())
                .bind(slot)
                .bind(holder)
                .execute(store.pool())
                .await;
            });
        }
    }
}
