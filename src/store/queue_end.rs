//! When newly queued messages are expected to go: each mailbox keeps its queue's end (the slot
//! of the last message queued) in its pacing row, so an estimate costs constant work per
//! mailbox, however long its queue.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::{Any, Row, Transaction};

use super::StoreError;

/// A message just stored, as the estimate needs it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Inserted<'a> {
    pub message_id: &'a str,
    pub mailbox: &'a str,
    /// Not before.
    pub send_at: DateTime<Utc>,
}

/// When each message should go (Unix ms, by message id): after the mailbox's queue end (or its
/// next slot, its pause, now, its own `send_at`), a `spacing` apart; moves each mailbox's
/// queue end. Pacing rows are taken in mailbox order, so concurrent groups cannot deadlock.
pub(super) async fn estimate(
    tx: &mut Transaction<'static, Any>,
    messages: &[Inserted<'_>],
    spacing: std::time::Duration,
) -> Result<HashMap<String, i64>, StoreError> {
    let spacing = i64::try_from(spacing.as_millis()).unwrap_or(i64::MAX);
    let mut by_mailbox: BTreeMap<&str, Vec<&Inserted>> = BTreeMap::new();
    for message in messages {
        by_mailbox.entry(message.mailbox).or_default().push(message);
    }
    let now = Utc::now().timestamp_millis();
    let mut estimates = HashMap::new();
    for (mailbox, messages) in by_mailbox {
        let pacing = sqlx::query(
            "INSERT INTO mailbox_pacing (mailbox, next_send_at) VALUES ($1, 0) \
             ON CONFLICT (mailbox) DO UPDATE SET mailbox = excluded.mailbox \
             RETURNING next_send_at, paused_until, queue_end",
        )
        .bind(mailbox)
        .fetch_one(&mut **tx)
        .await?;
        let next: i64 = pacing.try_get("next_send_at")?;
        let paused: Option<i64> = pacing.try_get("paused_until")?;
        let first_free = next.max(paused.unwrap_or(0)).max(now);
        let mut end = pacing
            .try_get::<i64, _>("queue_end")?
            .max(first_free.saturating_sub(spacing));
        for message in messages {
            end = end
                .saturating_add(spacing)
                .max(message.send_at.timestamp_millis());
            estimates.insert(message.message_id.to_owned(), end);
        }
        sqlx::query("UPDATE mailbox_pacing SET queue_end = $2 WHERE mailbox = $1")
            .bind(mailbox)
            .bind(end)
            .execute(&mut **tx)
            .await?;
    }
    Ok(estimates)
}
