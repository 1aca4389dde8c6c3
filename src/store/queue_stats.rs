//! What Status, `check` and the outbox's estimates read of a mailbox's queue and pace: how
//! many messages wait, how much of the limits was used, when the next send can be.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{
    MessageState, Store, StoreError,
    pacing::{DAY_MS, spacing, sum},
};
use crate::{clock::from_millis, domain::Mailbox, settings::PacingLimits};

/// A mailbox's queue and how much of its limits it used, for Status and `check`.
#[derive(Debug, Clone, Default)]
pub struct QueueUsage {
    pub queued: u64,
    pub oldest_queued_at: Option<DateTime<Utc>>,
    pub sent_last_minute: u32,
    pub recipients_last_24h: u64,
    pub paused_until: Option<DateTime<Utc>>,
    pub pause_reason: Option<String>,
}

impl Store {
    /// The mailbox's queue and limit usage.
    pub async fn queue_usage(
        &self,
        mailbox: &Mailbox,
        now: DateTime<Utc>,
    ) -> Result<QueueUsage, StoreError> {
        let now_ms = now.timestamp_millis();
        let queue = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(accepted_at) AS oldest FROM outbox_messages \
             WHERE mailbox = $1 AND (state = $2 OR state = $3)",
        )
        .bind(mailbox.as_str())
        .bind(MessageState::Queued)
        .bind(MessageState::Sending)
        .fetch_one(self.pool())
        .await?;
        let usage = sqlx::query(
            "SELECT CAST(COALESCE(SUM(CASE WHEN at > $2 THEN 1 ELSE 0 END), 0) AS BIGINT) AS minute, \
               CAST(COALESCE(SUM(recipients), 0) AS BIGINT) AS day \
             FROM mailbox_usage WHERE mailbox = $1 AND at > $3 AND at <= $4",
        )
        .bind(mailbox.as_str())
        .bind(now_ms - 60_000)
        .bind(now_ms - DAY_MS)
        .bind(now_ms)
        .fetch_one(self.pool())
        .await?;
        let pause = sqlx::query(
            "SELECT paused_until, pause_reason FROM mailbox_pacing \
             WHERE mailbox = $1 AND paused_until > $2",
        )
        .bind(mailbox.as_str())
        .bind(now_ms)
        .fetch_optional(self.pool())
        .await?;
        Ok(QueueUsage {
            queued: u64::try_from(queue.try_get::<i64, _>("n")?).unwrap_or(0),
            oldest_queued_at: queue.try_get::<Option<i64>, _>("oldest")?.map(from_millis),
            sent_last_minute: u32::try_from(sum(&usage, "minute")?).unwrap_or(u32::MAX),
            recipients_last_24h: u64::try_from(sum(&usage, "day")?).unwrap_or(0),
            paused_until: pause
                .as_ref()
                .map(|p| p.try_get::<i64, _>("paused_until"))
                .transpose()?
                .map(from_millis),
            pause_reason: pause
                .as_ref()
                .map(|p| p.try_get::<Option<String>, _>("pause_reason"))
                .transpose()?
                .flatten(),
        })
    }

    /// When the mailbox may send a message that has `ahead` messages before it: its next slot
    /// (or its pause's end), plus one spacing per message ahead.
    pub async fn estimate_send_at(
        &self,
        mailbox: &Mailbox,
        ahead: u64,
        limits: &PacingLimits,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        let row =
            sqlx::query("SELECT next_send_at, paused_until FROM mailbox_pacing WHERE mailbox = $1")
                .bind(mailbox.as_str())
                .fetch_optional(self.pool())
                .await?;
        let mut start = now.timestamp_millis();
        if let Some(row) = row {
            start = start.max(row.try_get::<i64, _>("next_send_at")?);
            if let Some(until) = row.try_get::<Option<i64>, _>("paused_until")? {
                start = start.max(until);
            }
        }
        let spacing_ms = i64::try_from(spacing(limits).as_millis()).unwrap_or(i64::MAX);
        let ahead = i64::try_from(ahead).unwrap_or(i64::MAX);
        Ok(from_millis(
            start.saturating_add(spacing_ms.saturating_mul(ahead)),
        ))
    }

    /// Every mailbox with messages not yet sent: how many, and the oldest's acceptance.
    pub async fn queue_depths(&self) -> Result<Vec<(Mailbox, u64, DateTime<Utc>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT mailbox, COUNT(*) AS n, MIN(accepted_at) AS oldest FROM outbox_messages \
             WHERE state = $1 OR state = $2 GROUP BY mailbox",
        )
        .bind(MessageState::Queued)
        .bind(MessageState::Sending)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    Mailbox::from_stored(row.try_get("mailbox")?),
                    u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0),
                    from_millis(row.try_get("oldest")?),
                ))
            })
            .collect()
    }

    /// Messages of the mailbox waiting to be sent.
    pub async fn queued_count(&self, mailbox: &Mailbox) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) FROM outbox_messages WHERE mailbox = $1 AND (state = $2 OR state = $3)",
        )
        .bind(mailbox.as_str())
        .bind(MessageState::Queued)
        .bind(MessageState::Sending)
        .fetch_one(self.pool())
        .await?
        .try_get(0)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
