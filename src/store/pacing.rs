//! Each mailbox's pace, shared by every replica: the next free send slot, a pause, and a log of
//! what was sent (or reserved) for the rolling limits.
//!
//! A worker reserves a slot and claims one due message of the mailbox in one short transaction
//! (no Graph call inside): the mailbox's pacing row is locked, the slot is the later of now and
//! `next_send_at`, the rolling sums (recipients a day, Graph requests in 10 minutes, uploads in
//! 5 minutes, external recipients a day) must leave room for the message, and `next_send_at`
//! moves on by 60 s / messages-per-minute. Slots are thus evenly spaced, which keeps any minute
//! within the limit however Microsoft counts it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Any, Row, Transaction};

use super::{
    Backend, ConnectionState, MessageState, Store, StoreError,
    outbox::record_events,
    outbox_flow::{CLAIMED_COLUMNS, ClaimedMessage, claimed_from_row},
};
use crate::{clock::from_millis, domain::Mailbox, settings::PacingLimits};

/// What a reservation found.
#[derive(Debug, Clone)]
pub enum Reservation {
    /// A message of the mailbox, claimed, to be sent at `slot`.
    Claimed {
        message: ClaimedMessage,
        slot: DateTime<Utc>,
    },
    /// The mailbox may send no earlier than this.
    NotBefore(DateTime<Utc>),
    /// Nothing of the mailbox is due.
    Empty,
}

/// The time between two sends of one mailbox: a minute over the limit, and 2 % more so that
/// sends delayed by a few milliseconds never put one more than the limit into any minute.
pub fn spacing(limits: &PacingLimits) -> Duration {
    let per_message = 60_000.0 / f64::from(limits.messages_per_minute.max(1));
    Duration::from_micros((per_message * 1020.0) as u64)
}

pub(super) const DAY_MS: i64 = 86_400_000;
const TEN_MINUTES_MS: i64 = 600_000;
const FIVE_MINUTES_MS: i64 = 300_000;

/// What a message uses of the rolling limits.
#[derive(Debug, Clone, Copy, Default)]
struct Use {
    recipients: i64,
    external: i64,
    requests: i64,
    upload_bytes: i64,
}

impl Store {
    /// Mailboxes with a message due now whose next slot is before `horizon` and which are not
    /// paused or waiting for their owner to reconnect.
    pub async fn ready_mailboxes(
        &self,
        now: DateTime<Utc>,
        horizon: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Mailbox>, StoreError> {
        // Every mailbox with a queued message has a pacing row (queueing writes its queue
        // end), so the query starts from the few pacing rows, not the many messages: one index
        // probe per mailbox, run at every tick.
        let rows = sqlx::query(
            "SELECT p.mailbox FROM mailbox_pacing p \
               LEFT JOIN mailboxes m ON m.mailbox = p.mailbox \
             WHERE p.next_send_at <= $3 \
               AND (p.paused_until IS NULL OR p.paused_until <= $2) \
               AND (m.state IS NULL OR m.state <> $4) \
               AND EXISTS (SELECT 1 FROM outbox_messages o \
                 WHERE o.mailbox = p.mailbox AND o.state = $1 AND o.next_attempt_at <= $2 \
                   AND (o.lease_until IS NULL OR o.lease_until < $2)) \
             ORDER BY p.next_send_at LIMIT $5",
        )
        .bind(MessageState::Queued)
        .bind(now.timestamp_millis())
        .bind(horizon.timestamp_millis())
        .bind(ConnectionState::ReauthorizationRequired)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok(Mailbox::from_stored(r.try_get(0)?)))
            .collect()
    }

    /// Reserves the mailbox's next slot and claims its oldest due message for it (SENDING from
    /// now on), if the slot is before `horizon` and the rolling limits leave room.
    pub async fn reserve_and_claim(
        &self,
        mailbox: &Mailbox,
        limits: &PacingLimits,
        holder: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
        horizon: DateTime<Utc>,
    ) -> Result<Reservation, StoreError> {
        let mut tx = self.pool().begin().await?;
        let (next_send_at, paused_until) = lock_pacing(self.backend(), &mut tx, mailbox).await?;
        let now_ms = now.timestamp_millis();
        if let Some(until) = paused_until.filter(|until| *until > now_ms) {
            tx.commit().await?;
            return Ok(Reservation::NotBefore(from_millis(until)));
        }
        let slot = next_send_at.max(now_ms);
        if slot > horizon.timestamp_millis() {
            tx.commit().await?;
            return Ok(Reservation::NotBefore(from_millis(slot)));
        }
        let Some((message, usage)) = due_message(self.backend(), &mut tx, mailbox, now_ms).await?
        else {
            tx.commit().await?;
            return Ok(Reservation::Empty);
        };
        let room_at = room_at(&mut tx, mailbox, limits, slot, usage).await?;
        if room_at > slot {
            sqlx::query("UPDATE mailbox_pacing SET next_send_at = $2 WHERE mailbox = $1")
                .bind(mailbox.as_str())
                .bind(room_at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Reservation::NotBefore(from_millis(room_at)));
        }
        let spacing_ms = i64::try_from(spacing(limits).as_millis()).unwrap_or(i64::MAX);
        sqlx::query("UPDATE mailbox_pacing SET next_send_at = $2 WHERE mailbox = $1")
            .bind(mailbox.as_str())
            .bind(slot.saturating_add(spacing_ms))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO mailbox_usage (mailbox, at, recipients, external, requests, \
               upload_bytes) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(mailbox.as_str())
        .bind(slot)
        .bind(usage.recipients)
        .bind(usage.external)
        .bind(usage.requests)
        .bind(usage.upload_bytes)
        .execute(&mut *tx)
        .await?;
        // From here on the message may reach Microsoft: SENDING, in the claim's own
        // transaction, so its send at the slot waits for nothing.
        sqlx::query(
            "UPDATE outbox_messages SET lease_holder = $1, lease_until = $2, state = $3, \
               attempts = attempts + 1, sending_since = $4, next_attempt_at = NULL \
             WHERE message_id = $5",
        )
        .bind(holder)
        .bind(lease_until.timestamp_millis())
        .bind(MessageState::Sending)
        .bind(now_ms)
        .bind(&message.message_id)
        .execute(&mut *tx)
        .await?;
        record_events(
            &mut tx,
            std::slice::from_ref(&message.message_id),
            Some(now),
        )
        .await?;
        tx.commit().await?;
        Ok(Reservation::Claimed {
            message,
            slot: from_millis(slot),
        })
    }

    /// Holds the mailbox's queue until `until` (Retry-After, Exchange stopping it).
    pub async fn pause_queue(
        &self,
        mailbox: &Mailbox,
        until: DateTime<Utc>,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO mailbox_pacing (mailbox, next_send_at, paused_until, pause_reason) \
             VALUES ($1, 0, $2, $3) ON CONFLICT (mailbox) DO UPDATE SET \
               paused_until = CASE WHEN mailbox_pacing.paused_until IS NULL \
                                     OR mailbox_pacing.paused_until < $2 \
                                   THEN $2 ELSE mailbox_pacing.paused_until END, \
               pause_reason = $3",
        )
        .bind(mailbox.as_str())
        .bind(until.timestamp_millis())
        .bind(reason)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

/// A SUM column (cast to BIGINT in the SQL: PostgreSQL's SUM of a BIGINT is a NUMERIC, which
/// the Any driver cannot read).
pub(super) fn sum(row: &sqlx::any::AnyRow, column: &str) -> Result<i64, sqlx::Error> {
    row.try_get::<i64, _>(column)
}

/// Locks the mailbox's pacing row for the transaction; returns `next_send_at` and the pause.
async fn lock_pacing(
    backend: Backend,
    tx: &mut Transaction<'static, Any>,
    mailbox: &Mailbox,
) -> Result<(i64, Option<i64>), StoreError> {
    // Written first, the row exists below; on SQLite this first write also takes the write
    // lock for the whole transaction (the equivalent of PostgreSQL's row lock).
    sqlx::query(
        "INSERT INTO mailbox_pacing (mailbox, next_send_at) VALUES ($1, 0) \
         ON CONFLICT (mailbox) DO UPDATE SET next_send_at = mailbox_pacing.next_send_at",
    )
    .bind(mailbox.as_str())
    .execute(&mut **tx)
    .await?;
    let select = match backend {
        Backend::Postgres => {
            "SELECT next_send_at, paused_until FROM mailbox_pacing WHERE mailbox = $1 FOR UPDATE"
        }
        Backend::Sqlite => {
            "SELECT next_send_at, paused_until FROM mailbox_pacing WHERE mailbox = $1"
        }
    };
    let row = sqlx::query(select)
        .bind(mailbox.as_str())
        .fetch_one(&mut **tx)
        .await?;
    Ok((row.try_get("next_send_at")?, row.try_get("paused_until")?))
}

/// The mailbox's oldest due, unclaimed message, and what sending it uses.
async fn due_message(
    backend: Backend,
    tx: &mut Transaction<'static, Any>,
    mailbox: &Mailbox,
    now_ms: i64,
) -> Result<Option<(ClaimedMessage, Use)>, StoreError> {
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "SELECT {CLAIMED_COLUMNS}, external, requests, upload_bytes FROM outbox_messages \
         WHERE mailbox = $1 AND state = $2 AND next_attempt_at <= $3 \
           AND (lease_until IS NULL OR lease_until < $3) \
         ORDER BY next_attempt_at, accepted_at LIMIT 1{lock}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(mailbox.as_str())
        .bind(MessageState::Queued)
        .bind(now_ms)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let message = claimed_from_row(&row)?;
    let usage = Use {
        recipients: i64::from(message.recipients),
        external: row.try_get("external")?,
        requests: row.try_get("requests")?,
        upload_bytes: row.try_get("upload_bytes")?,
    };
    Ok(Some((message, usage)))
}

/// The earliest time from `slot` on at which the rolling limits have room for `usage`.
async fn room_at(
    tx: &mut Transaction<'static, Any>,
    mailbox: &Mailbox,
    limits: &PacingLimits,
    slot: i64,
    usage: Use,
) -> Result<i64, StoreError> {
    let sums = sqlx::query(
        "SELECT CAST(COALESCE(SUM(recipients), 0) AS BIGINT) AS recipients, \
           CAST(COALESCE(SUM(external), 0) AS BIGINT) AS external, \
           CAST(COALESCE(SUM(CASE WHEN at > $3 THEN requests ELSE 0 END), 0) AS BIGINT) AS requests, \
           CAST(COALESCE(SUM(CASE WHEN at > $4 THEN upload_bytes ELSE 0 END), 0) AS BIGINT) AS upload_bytes \
         FROM mailbox_usage WHERE mailbox = $1 AND at > $2",
    )
    .bind(mailbox.as_str())
    .bind(slot - DAY_MS)
    .bind(slot - TEN_MINUTES_MS)
    .bind(slot - FIVE_MINUTES_MS)
    .fetch_one(&mut **tx)
    .await?;
    let limit = |l: u64| i64::try_from(l).unwrap_or(i64::MAX);
    let windows: [(Option<i64>, i64, &'static str, i64); 4] = [
        (
            Some(limit(limits.recipients_per_day)),
            DAY_MS,
            "recipients",
            usage.recipients,
        ),
        (
            limits.external_recipients_per_day.map(limit),
            DAY_MS,
            "external",
            usage.external,
        ),
        (
            Some(limit(limits.requests_per_10_minutes)),
            TEN_MINUTES_MS,
            "requests",
            usage.requests,
        ),
        (
            Some(limit(limits.upload_bytes_per_5_minutes)),
            FIVE_MINUTES_MS,
            "upload_bytes",
            usage.upload_bytes,
        ),
    ];
    let mut at = slot;
    for (limit, window, column, wanted) in windows {
        let Some(limit) = limit else { continue };
        let excess = sum(&sums, column)? + wanted - limit;
        if wanted == 0 || excess <= 0 {
            continue;
        }
        at = at.max(free_at(tx, mailbox, column, slot - window, excess).await? + window + 1);
    }
    Ok(at)
}

/// When enough of the oldest use in the window (from `since`) has left it to free `excess`
/// (or all of it, for a message larger than the limit on its own).
async fn free_at(
    tx: &mut Transaction<'static, Any>,
    mailbox: &Mailbox,
    column: &'static str,
    since: i64,
    excess: i64,
) -> Result<i64, StoreError> {
    let sql = format!(
        "SELECT at, {column} AS amount FROM mailbox_usage \
         WHERE mailbox = $1 AND at > $2 AND {column} > 0 ORDER BY at"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(mailbox.as_str())
        .bind(since)
        .fetch_all(&mut **tx)
        .await?;
    let mut freed = 0;
    let mut oldest_left = since;
    for row in &rows {
        freed += row.try_get::<i64, _>("amount")?;
        oldest_left = row.try_get::<i64, _>("at")?;
        if freed >= excess {
            break;
        }
    }
    Ok(oldest_left)
}
