//! The outbox's tables: putting messages (and SendBulk batches) in, in one transaction per
//! group of callers, and reading them back for GetMessage, ListMessages and GetBatch.
//!
//! Every state change writes an event row (`outbox_events`) in the same transaction as the
//! change, copied from the message row it describes. On PostgreSQL those transactions take one
//! advisory lock before writing their events, so events commit in the order of their sequence
//! numbers and a watcher reading "after sequence n" never skips one that commits late; SQLite
//! has one writer anyway.

use chrono::{DateTime, Utc};
use sqlx::{Any, Row, Transaction, any::AnyRow};

use super::{Backend, MessageState, Store, StoreError, queue_end, state_column};
use crate::{
    clock::from_millis,
    domain::{Mailbox, MailboxPattern},
};

/// The advisory lock that orders event commits on PostgreSQL.
const EVENTS_LOCK: i64 = 0x6772_6170_685f_6d62; // "graph_mb"

/// The notification channel that wakes delivery workers on other replicas (PostgreSQL).
pub const QUEUE_CHANNEL: &str = "graph_mailer_outbox";

/// A message to put in the outbox.
#[derive(Debug, Clone)]
pub struct NewQueued {
    pub message_id: String,
    pub mailbox: Mailbox,
    pub batch_id: Option<String>,
    pub recipients: u32,
    /// Recipients outside the mailbox's domain.
    pub external: u32,
    /// Attachment bytes that go through upload sessions.
    pub upload_bytes: u64,
    /// Graph requests sending it will take.
    pub requests: u32,
    /// The message's size (what sending it holds in memory).
    pub size_bytes: u64,
    pub accepted_at: DateTime<Utc>,
    /// Not before.
    pub send_at: DateTime<Utc>,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    pub caller: String,
    pub body: Vec<u8>,
}

/// What became of one message put in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queued {
    /// Stored now; expected to go at `estimate`.
    New { estimate: DateTime<Utc> },
    /// Its idempotency key was taken: the earlier message's id and request hash.
    Existing {
        message_id: String,
        request_hash: String,
    },
}

/// A SendBulk batch to put in.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub batch_id: String,
    pub mailbox: Mailbox,
    pub template: Vec<u8>,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    pub caller: String,
    pub accepted_at: DateTime<Utc>,
}

/// What became of a batch put in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchQueued {
    /// Stored now; its last message is expected to go at `estimate`.
    New { estimate: DateTime<Utc> },
    /// Its idempotency key was taken.
    Existing {
        batch_id: String,
        request_hash: String,
        total: u64,
    },
}

/// A queued message as GetMessage reports it.
#[derive(Debug, Clone)]
pub struct MessageRecord {
    pub message_id: String,
    pub mailbox: Mailbox,
    pub batch_id: Option<String>,
    pub state: MessageState,
    pub attempts: u32,
    pub recipients: u32,
    pub accepted_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub graph_request_id: Option<String>,
}

/// A batch's messages counted by state.
#[derive(Debug, Clone, Default)]
pub struct BatchRecord {
    pub batch_id: String,
    pub mailbox: Option<Mailbox>,
    pub total: u64,
    pub queued: u64,
    pub sent: u64,
    pub failed: u64,
    pub unknown: u64,
    pub cancelled: u64,
}

/// Which messages ListMessages wants.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// `None`: any mailbox `allowed` matches (or any at all when `allowed` is `None`).
    pub mailbox: Option<Mailbox>,
    /// The mailboxes the caller may see; `None` for everyone's.
    pub allowed: Option<Vec<MailboxPattern>>,
    pub state: Option<MessageState>,
    pub batch_id: Option<String>,
}

/// The columns a [`MessageRecord`] (and an event) is read from.
pub(super) const RECORD_COLUMNS: &str = "message_id, mailbox, batch_id, state, attempts, \
     recipients, accepted_at, next_attempt_at, sent_at, last_error, graph_request_id";

/// Rows per INSERT statement (each row binds 17 values; both databases take thousands).
const ROWS_PER_INSERT: usize = 200;

impl Store {
    /// Begins a transaction that will write events (see [`record_events`] for their order).
    pub(super) async fn begin_with_events(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(self.pool().begin().await?)
    }

    /// Tells the other replicas' workers that messages are due (PostgreSQL).
    pub(super) async fn notify_queue(
        &self,
        tx: &mut Transaction<'static, Any>,
    ) -> Result<(), StoreError> {
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(QUEUE_CHANNEL)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Puts messages in the outbox in one transaction (one fsync for the whole group), each
    /// with the time it is expected to go (a slot every `spacing` per mailbox).
    pub async fn queue_messages(
        &self,
        rows: &[NewQueued],
        spacing: std::time::Duration,
    ) -> Result<Vec<Queued>, StoreError> {
        let mut tx = self.begin_with_events().await?;
        let inserted = insert_messages(&mut tx, rows).await?;
        let estimates =
            queue_end::estimate(&mut tx, &just_inserted(rows, &inserted), spacing).await?;
        record_queued_events(&mut tx, rows, &inserted).await?;
        self.notify_queue(&mut tx).await?;
        tx.commit().await?;
        let mut results = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(estimate) = estimates.get(&row.message_id) {
                results.push(Queued::New {
                    estimate: from_millis(*estimate),
                });
                continue;
            }
            // Only a taken idempotency key stops an insert.
            let existing = sqlx::query(
                "SELECT message_id, request_hash FROM outbox_messages \
                 WHERE mailbox = $1 AND idem_key = $2",
            )
            .bind(row.mailbox.as_str())
            .bind(row.idempotency_key.as_deref())
            .fetch_one(self.pool())
            .await?;
            results.push(Queued::Existing {
                message_id: existing.try_get("message_id")?,
                request_hash: existing.try_get("request_hash")?,
            });
        }
        Ok(results)
    }

    /// Puts a whole batch in, in one transaction: all its messages or none.
    pub async fn queue_batch(
        &self,
        batch: &NewBatch,
        rows: &[NewQueued],
        spacing: std::time::Duration,
    ) -> Result<BatchQueued, StoreError> {
        let mut tx = self.begin_with_events().await?;
        let inserted = sqlx::query(
            "INSERT INTO outbox_batches (batch_id, mailbox, total, template, idem_key, \
               request_hash, caller, accepted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (mailbox, idem_key) DO NOTHING",
        )
        .bind(&batch.batch_id)
        .bind(batch.mailbox.as_str())
        .bind(rows.len() as i64)
        .bind(&batch.template)
        .bind(batch.idempotency_key.as_deref())
        .bind(&batch.request_hash)
        .bind(&batch.caller)
        .bind(batch.accepted_at.timestamp_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            let row = sqlx::query(
                "SELECT batch_id, request_hash, total FROM outbox_batches \
                 WHERE mailbox = $1 AND idem_key = $2",
            )
            .bind(batch.mailbox.as_str())
            .bind(batch.idempotency_key.as_deref())
            .fetch_one(self.pool())
            .await?;
            return Ok(BatchQueued::Existing {
                batch_id: row.try_get("batch_id")?,
                request_hash: row.try_get("request_hash")?,
                total: u64::try_from(row.try_get::<i64, _>("total")?).unwrap_or(0),
            });
        }
        let inserted = insert_messages(&mut tx, rows).await?;
        let estimates =
            queue_end::estimate(&mut tx, &just_inserted(rows, &inserted), spacing).await?;
        record_queued_events(&mut tx, rows, &inserted).await?;
        self.notify_queue(&mut tx).await?;
        tx.commit().await?;
        let last = estimates.values().max().copied().unwrap_or_default();
        Ok(BatchQueued::New {
            estimate: from_millis(last),
        })
    }
}

/// The rows whose ids were inserted, as the estimate needs them.
fn just_inserted<'a>(rows: &'a [NewQueued], inserted: &[String]) -> Vec<queue_end::Inserted<'a>> {
    let inserted: std::collections::HashSet<&str> = inserted.iter().map(String::as_str).collect();
    rows.iter()
        .filter(|row| inserted.contains(row.message_id.as_str()))
        .map(|row| queue_end::Inserted {
            message_id: &row.message_id,
            mailbox: row.mailbox.as_str(),
            send_at: row.send_at,
        })
        .collect()
}

/// Inserts the rows; returns the ids actually inserted (a taken idempotency key skips its
/// row). The caller records their QUEUED events last: the events lock is always the last lock
/// a transaction takes, or two transactions could each wait for the other's.
async fn insert_messages(
    tx: &mut Transaction<'static, Any>,
    rows: &[NewQueued],
) -> Result<Vec<String>, StoreError> {
    // In key order: two transactions inserting the same keys (two replicas' group commits, or
    // one and a SendBulk) then wait for each other in the same order instead of each holding
    // what the other needs.
    let mut rows: Vec<&NewQueued> = rows.iter().collect();
    rows.sort_by(|a, b| {
        (a.mailbox.as_str(), &a.idempotency_key).cmp(&(b.mailbox.as_str(), &b.idempotency_key))
    });
    let mut inserted = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut sql = String::from(
            "INSERT INTO outbox_messages (message_id, mailbox, batch_id, state, attempts, \
               recipients, external, upload_bytes, requests, accepted_at, next_attempt_at, \
               idem_key, request_hash, caller, body, sending_since, finished_at, size_bytes) \
             VALUES ",
        );
        const COLUMNS: usize = 18;
        for (i, _) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            let places: Vec<String> = (1..=COLUMNS)
                .map(|c| format!("${}", i * COLUMNS + c))
                .collect();
            sql.push('(');
            sql.push_str(&places.join(", "));
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT (mailbox, idem_key) DO NOTHING RETURNING message_id");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            query = query
                .bind(row.message_id.clone())
                .bind(row.mailbox.to_string())
                .bind(row.batch_id.clone())
                .bind(MessageState::Queued)
                .bind(0i64)
                .bind(i64::from(row.recipients))
                .bind(i64::from(row.external))
                .bind(i64::try_from(row.upload_bytes).unwrap_or(i64::MAX))
                .bind(i64::from(row.requests))
                .bind(row.accepted_at.timestamp_millis())
                .bind(row.send_at.timestamp_millis())
                .bind(row.idempotency_key.clone())
                .bind(row.request_hash.clone())
                .bind(row.caller.clone())
                .bind(row.body.clone())
                .bind(None::<i64>)
                .bind(None::<i64>)
                .bind(i64::try_from(row.size_bytes).unwrap_or(i64::MAX));
        }
        let returned = query.fetch_all(&mut **tx).await?;
        let ids: Vec<String> = returned
            .iter()
            .map(|r| r.try_get::<String, _>("message_id"))
            .collect::<Result<_, _>>()?;
        inserted.extend(ids);
    }
    Ok(inserted)
}

/// The QUEUED events of the messages inserted, stamped with their acceptance time.
async fn record_queued_events(
    tx: &mut Transaction<'static, Any>,
    rows: &[NewQueued],
    inserted: &[String],
) -> Result<(), StoreError> {
    let accepted_at = rows.first().map(|r| r.accepted_at);
    record_events(tx, inserted, accepted_at).await
}

/// Writes one event per message from its current row. On PostgreSQL the transaction first
/// takes the events lock (held to its commit, so taken as late as possible): sequence numbers
/// are then assigned, and committed, in order.
pub(super) async fn record_events(
    tx: &mut Transaction<'static, Any>,
    ids: &[String],
    at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    if tx.backend_name() == "PostgreSQL" {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(EVENTS_LOCK)
            .execute(&mut **tx)
            .await?;
    }
    let at = at.unwrap_or_else(Utc::now).timestamp_millis();
    for chunk in ids.chunks(ROWS_PER_INSERT) {
        let places: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "INSERT INTO outbox_events (message_id, mailbox, batch_id, state, attempts, \
               recipients, accepted_at, next_attempt_at, sent_at, last_error, \
               graph_request_id, at) \
             SELECT message_id, mailbox, batch_id, state, attempts, recipients, accepted_at, \
               next_attempt_at, sent_at, last_error, graph_request_id, $1 \
             FROM outbox_messages WHERE message_id IN ({}) ORDER BY accepted_at, message_id",
            places.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(at);
        for id in chunk {
            query = query.bind(id.clone());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// A message row (or an event row, which has the same columns) as a record.
pub(super) fn record_from_row(row: &AnyRow) -> Result<MessageRecord, StoreError> {
    let message_id: String = row.try_get("message_id")?;
    let time = |name: &str| -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        Ok(row.try_get::<Option<i64>, _>(name)?.map(from_millis))
    };
    Ok(MessageRecord {
        state: state_column(row, "state", "outbox_messages", &message_id)?,
        mailbox: Mailbox::from_stored(row.try_get("mailbox")?),
        batch_id: row.try_get("batch_id")?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        recipients: u32::try_from(row.try_get::<i64, _>("recipients")?).unwrap_or(u32::MAX),
        accepted_at: from_millis(row.try_get("accepted_at")?),
        next_attempt_at: time("next_attempt_at")?,
        sent_at: time("sent_at")?,
        last_error: row.try_get("last_error")?,
        graph_request_id: row.try_get("graph_request_id")?,
        message_id,
    })
}
