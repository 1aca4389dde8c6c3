//! A queued message's way through the outbox: claimed under a lease, SENDING, and then SENT,
//! FAILED, QUEUED again or UNKNOWN; cancelled; swept when its replica stopped, when it grew too
//! old, and when its status has been kept long enough. Each change writes its event in the same
//! transaction.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{
    MessageState, Store, StoreError,
    outbox::{MessageRecord, record_events},
};
use crate::domain::Mailbox;

/// A message a worker holds the lease of.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    pub message_id: String,
    pub mailbox: Mailbox,
    pub batch_id: Option<String>,
    pub attempts: u32,
    pub recipients: u32,
    pub accepted_at: DateTime<Utc>,
    /// When it became SENDING (for an UNKNOWN message: when its last attempt began).
    pub sending_since: Option<DateTime<Utc>>,
    /// The message's size: what sending it holds in memory.
    pub size_bytes: u64,
}

/// How a state change ends for the message.
#[derive(Debug, Clone)]
pub enum Outcome {
    Sent {
        at: DateTime<Utc>,
    },
    Failed {
        error: String,
    },
    /// Back to QUEUED, due at `next`.
    Retry {
        next: DateTime<Utc>,
        error: String,
    },
    /// UNKNOWN; looked up again at `next` (`None`: never, it cannot be looked up).
    Unknown {
        next: Option<DateTime<Utc>>,
        error: String,
        /// Microsoft answered, ambiguously: the request reached it, so the message is never
        /// sent again, even when it does not show in Sent Items (as opposed to a replica that
        /// stopped mid-send, whose request may never have left).
        answered: bool,
    },
}

/// How one attempt (or look-up) of a claimed message ended.
#[derive(Debug, Clone)]
pub struct Finish {
    pub message_id: String,
    /// The replica whose lease it was (a lease lost meanwhile records nothing).
    pub holder: String,
    pub outcome: Outcome,
    pub graph_request_id: Option<String>,
    pub at: DateTime<Utc>,
}

impl Store {
    /// Records how an attempt (or a look-up) ended, and gives the lease back.
    pub async fn finish_attempt(
        &self,
        id: &str,
        holder: &str,
        outcome: &Outcome,
        graph_request_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.finish_attempts(&[Finish {
            message_id: id.to_owned(),
            holder: holder.to_owned(),
            outcome: outcome.clone(),
            graph_request_id: graph_request_id.map(str::to_owned),
            at: now,
        }])
        .await
    }

    /// Records several outcomes in one transaction (one commit for a group of sends).
    pub async fn finish_attempts(&self, finishes: &[Finish]) -> Result<(), StoreError> {
        let mut tx = self.begin_with_events().await?;
        let mut updated = Vec::with_capacity(finishes.len());
        for finish in finishes {
            if record_outcome(&mut tx, finish).await? {
                updated.push(finish);
            }
        }
        // One event per change, stamped with its own time; the events lock is taken last.
        for finish in updated {
            record_events(
                &mut tx,
                std::slice::from_ref(&finish.message_id),
                Some(finish.at),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Gives back a claimed message whose send never began (shutdown): QUEUED again, due now,
    /// the attempt its claim counted undone.
    pub async fn release_claim(&self, id: &str, holder: &str) -> Result<(), StoreError> {
        let now = Utc::now();
        let mut tx = self.begin_with_events().await?;
        let updated = sqlx::query(
            "UPDATE outbox_messages SET state = $1, next_attempt_at = $2, sending_since = NULL, \
               attempts = attempts - 1, lease_holder = NULL, lease_until = NULL \
             WHERE message_id = $3 AND lease_holder = $4 AND state = $5",
        )
        .bind(MessageState::Queued)
        .bind(now.timestamp_millis())
        .bind(id)
        .bind(holder)
        .bind(MessageState::Sending)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 1 {
            record_events(&mut tx, &[id.to_owned()], Some(now)).await?;
        }
        self.notify_queue(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Extends `holder`'s leases of the messages `ids` (still being worked on).
    pub async fn renew_leases(
        &self,
        holder: &str,
        ids: &[String],
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for chunk in ids.chunks(500) {
            let places: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
            let sql = format!(
                "UPDATE outbox_messages SET lease_until = $1 \
                 WHERE lease_holder = $2 AND message_id IN ({})",
                places.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(until.timestamp_millis())
                .bind(holder);
            for id in chunk {
                query = query.bind(id.clone());
            }
            query.execute(self.pool()).await?;
        }
        Ok(())
    }

    /// Cancels a QUEUED message; `None` when unknown, else its record and whether it was
    /// cancelled now.
    pub async fn cancel_message(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(MessageRecord, bool)>, StoreError> {
        let mut tx = self.begin_with_events().await?;
        let cancelled = cancel_where(&mut tx, "message_id = $4", id, now).await?;
        tx.commit().await?;
        Ok(self
            .queued_message(id)
            .await?
            .map(|record| (record, !cancelled.is_empty())))
    }

    /// Cancels every QUEUED message of a batch; returns how many.
    pub async fn cancel_batch(
        &self,
        batch_id: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_with_events().await?;
        let cancelled = cancel_where(&mut tx, "batch_id = $4", batch_id, now).await?;
        tx.commit().await?;
        Ok(cancelled.len() as u64)
    }

    /// Messages due for a look-up in Sent Items (UNKNOWN), claimed under a lease.
    pub async fn claim_unknown(
        &self,
        holder: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        let lock = match self.backend() {
            super::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            super::Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE outbox_messages SET lease_holder = $1, lease_until = $2 \
             WHERE message_id IN (SELECT message_id FROM outbox_messages \
               WHERE state = $3 AND next_attempt_at <= $4 \
                 AND (lease_until IS NULL OR lease_until < $4) \
               ORDER BY next_attempt_at LIMIT $5{lock}) \
             RETURNING {CLAIMED_COLUMNS}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(holder)
            .bind(lease_until.timestamp_millis())
            .bind(MessageState::Unknown)
            .bind(now.timestamp_millis())
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(claimed_from_row).collect()
    }

    /// SENDING messages whose replica stopped renewing its lease: they may have reached
    /// Microsoft, so they become UNKNOWN (looked up before anything else happens to them).
    pub async fn orphans_to_unknown(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut tx = self.begin_with_events().await?;
        let update = sqlx::query(
            "UPDATE outbox_messages SET state = $1, next_attempt_at = $2, lease_holder = NULL, \
               lease_until = NULL, \
               last_error = 'the replica sending it stopped; looking it up in Sent Items' \
             WHERE state = $3 AND lease_until < $2 RETURNING message_id",
        )
        .bind(MessageState::Unknown)
        .bind(now.timestamp_millis())
        .bind(MessageState::Sending);
        let ids = change_with_events(&mut tx, update, now).await?;
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    /// QUEUED messages older than `max_age` fail with their last error.
    pub async fn fail_expired(
        &self,
        accepted_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_with_events().await?;
        let update = sqlx::query(
            "UPDATE outbox_messages SET state = $1, finished_at = $2, next_attempt_at = NULL, \
               body = NULL, last_error = 'not sent within GRAPH_MAILER_OUTBOX_MAX_AGE_SECONDS' \
                 || CASE WHEN last_error IS NULL THEN '' ELSE '; last error: ' || last_error END \
             WHERE state = $3 AND accepted_at < $4 \
               AND (lease_until IS NULL OR lease_until < $2) RETURNING message_id",
        )
        .bind(MessageState::Failed)
        .bind(now.timestamp_millis())
        .bind(MessageState::Queued)
        .bind(accepted_before.timestamp_millis());
        let ids = change_with_events(&mut tx, update, now).await?;
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    /// Deletes what finished before `finished_before`: messages, their batches and events.
    /// Returns the messages deleted.
    pub async fn purge_outbox(&self, finished_before: DateTime<Utc>) -> Result<u64, StoreError> {
        let cutoff = finished_before.timestamp_millis();
        let purged = sqlx::query(
            "DELETE FROM outbox_messages WHERE finished_at IS NOT NULL AND finished_at < $1",
        )
        .bind(cutoff)
        .execute(self.pool())
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM outbox_events WHERE at < $1")
            .bind(cutoff)
            .execute(self.pool())
            .await?;
        sqlx::query(
            "DELETE FROM outbox_batches WHERE accepted_at < $1 AND NOT EXISTS \
               (SELECT 1 FROM outbox_messages m WHERE m.batch_id = outbox_batches.batch_id)",
        )
        .bind(cutoff)
        .execute(self.pool())
        .await?;
        // A batch whose messages are all finished needs its template no more.
        sqlx::query(
            "UPDATE outbox_batches SET template = NULL WHERE template IS NOT NULL AND NOT EXISTS \
               (SELECT 1 FROM outbox_messages m WHERE m.batch_id = outbox_batches.batch_id \
                  AND m.finished_at IS NULL)",
        )
        .execute(self.pool())
        .await?;
        sqlx::query("DELETE FROM mailbox_usage WHERE at < $1")
            .bind(cutoff.min(chrono::Utc::now().timestamp_millis() - 86_400_000))
            .execute(self.pool())
            .await?;
        Ok(purged)
    }
}

/// The columns a [`ClaimedMessage`] is read from.
pub(super) const CLAIMED_COLUMNS: &str = "message_id, mailbox, batch_id, attempts, recipients, \
     accepted_at, sending_since, size_bytes";

pub(super) fn claimed_from_row(row: &sqlx::any::AnyRow) -> Result<ClaimedMessage, StoreError> {
    Ok(ClaimedMessage {
        message_id: row.try_get("message_id")?,
        mailbox: Mailbox::from_stored(row.try_get("mailbox")?),
        batch_id: row.try_get("batch_id")?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        recipients: u32::try_from(row.try_get::<i64, _>("recipients")?).unwrap_or(u32::MAX),
        accepted_at: crate::clock::from_millis(row.try_get("accepted_at")?),
        sending_since: row
            .try_get::<Option<i64>, _>("sending_since")?
            .map(crate::clock::from_millis),
        size_bytes: u64::try_from(row.try_get::<i64, _>("size_bytes")?).unwrap_or(0),
    })
}

/// Cancels the QUEUED messages matching `condition` (on `$4`); returns their ids. A worker
/// holding one for its send slot finds it cancelled when it tries to send it.
async fn cancel_where(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    condition: &'static str,
    value: &str,
    now: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    let sql = format!(
        "UPDATE outbox_messages SET state = $1, finished_at = $2, next_attempt_at = NULL, \
           body = NULL, lease_holder = NULL, lease_until = NULL \
         WHERE state = $3 AND {condition} RETURNING message_id"
    );
    let update = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(MessageState::Cancelled)
        .bind(now.timestamp_millis())
        .bind(MessageState::Queued)
        .bind(value);
    let ids = change_with_events(tx, update, now).await?;
    Ok(ids)
}

/// Writes one outcome if `holder` still holds the message; whether it did.
async fn record_outcome(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    finish: &Finish,
) -> Result<bool, StoreError> {
    let (state, next, sent_at, error) = match &finish.outcome {
        Outcome::Sent { at } => (MessageState::Sent, None, Some(*at), None),
        Outcome::Failed { error } => (MessageState::Failed, None, None, Some(error.as_str())),
        Outcome::Retry { next, error } => (
            MessageState::Queued,
            Some(*next),
            None,
            Some(error.as_str()),
        ),
        Outcome::Unknown { next, error, .. } => {
            (MessageState::Unknown, *next, None, Some(error.as_str()))
        }
    };
    let answered = matches!(finish.outcome, Outcome::Unknown { answered: true, .. });
    let finished = state.is_final().then_some(finish.at.timestamp_millis());
    let updated = sqlx::query(
        "UPDATE outbox_messages SET state = $1, next_attempt_at = $2, sent_at = $3, \
           last_error = COALESCE($4, last_error), \
           graph_request_id = COALESCE($5, graph_request_id), finished_at = $6, \
           body = CASE WHEN $6 IS NULL THEN body ELSE NULL END, \
           sending_since = CASE WHEN $9 THEN NULL ELSE sending_since END, \
           lease_holder = NULL, lease_until = NULL \
         WHERE message_id = $7 AND lease_holder = $8",
    )
    .bind(state)
    .bind(next.map(|t| t.timestamp_millis()))
    .bind(sent_at.map(|t| t.timestamp_millis()))
    .bind(error)
    .bind(finish.graph_request_id.as_deref())
    .bind(finished)
    .bind(&finish.message_id)
    .bind(&finish.holder)
    .bind(answered)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Runs an `UPDATE … RETURNING message_id` and records an event for each message it changed.
async fn change_with_events(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    update: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    now: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    let ids = update
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<Vec<_>, _>>()?;
    record_events(tx, &ids, Some(now)).await?;
    Ok(ids)
}
