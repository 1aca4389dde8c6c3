//! The `idempotency_keys` table: what a send under a caller's key became, so a repeat within
//! the key's lifetime gets the first answer instead of a second message.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{IdempotencyStatus, Store, StoreError, state_column};
use crate::{clock::from_millis, domain::Mailbox};

/// A stored idempotency key.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub request_hash: String,
    pub status: IdempotencyStatus,
    pub message_id: String,
    pub accepted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// The outcome of claiming a key.
#[derive(Debug, Clone)]
pub enum Claim {
    /// This call owns the key and must send.
    Claimed,
    /// Another call has (or had) it.
    Existing(IdempotencyRecord),
}

impl Store {
    /// Claims `key` for a send, unless a live record of it exists.
    pub async fn claim_idempotency(
        &self,
        mailbox: &Mailbox,
        key: &str,
        request_hash: &str,
        message_id: &str,
        now: DateTime<Utc>,
        lifetime: chrono::Duration,
    ) -> Result<Claim, StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE mailbox = $1 AND idem_key = $2 AND expires_at <= $3",
        )
        .bind(mailbox.as_str())
        .bind(key)
        .bind(now.timestamp_millis())
        .execute(self.pool())
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys \
               (mailbox, idem_key, request_hash, status, message_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $7, $4, $5, $6) \
             ON CONFLICT (mailbox, idem_key) DO NOTHING",
        )
        .bind(mailbox.as_str())
        .bind(key)
        .bind(request_hash)
        .bind(message_id)
        .bind(now.timestamp_millis())
        .bind((now + lifetime).timestamp_millis())
        .bind(IdempotencyStatus::InProgress)
        .execute(self.pool())
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Claim::Claimed);
        }
        match self.idempotency_record(mailbox, key).await? {
            Some(record) => Ok(Claim::Existing(record)),
            // Deleted between our insert and read (expired and purged): try once more.
            None => {
                Box::pin(self.claim_idempotency(
                    mailbox,
                    key,
                    request_hash,
                    message_id,
                    now,
                    lifetime,
                ))
                .await
            }
        }
    }

    /// The record of `key`, if any.
    pub async fn idempotency_record(
        &self,
        mailbox: &Mailbox,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT request_hash, status, message_id, accepted_at, created_at \
             FROM idempotency_keys WHERE mailbox = $1 AND idem_key = $2",
        )
        .bind(mailbox.as_str())
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(IdempotencyRecord {
                request_hash: row.try_get("request_hash")?,
                status: state_column(&row, "status", "idempotency_keys", key)?,
                message_id: row.try_get("message_id")?,
                accepted_at: row
                    .try_get::<Option<i64>, _>("accepted_at")?
                    .map(from_millis),
                created_at: from_millis(row.try_get("created_at")?),
            })
        })
        .transpose()
    }

    /// Records how the send under `key` ended.
    pub async fn finish_idempotency(
        &self,
        mailbox: &Mailbox,
        key: &str,
        status: IdempotencyStatus,
        accepted_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $3, accepted_at = $4 \
             WHERE mailbox = $1 AND idem_key = $2",
        )
        .bind(mailbox.as_str())
        .bind(key)
        .bind(status)
        .bind(accepted_at.map(|t| t.timestamp_millis()))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Frees `key` after a send that certainly did not happen, so the caller may retry with it.
    pub async fn release_idempotency(
        &self,
        mailbox: &Mailbox,
        key: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE mailbox = $1 AND idem_key = $2")
            .bind(mailbox.as_str())
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Deletes keys past their lifetime. Returns how many went.
    pub(crate) async fn purge_expired_keys(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
                .bind(now.timestamp_millis())
                .execute(self.pool())
                .await?
                .rows_affected(),
        )
    }
}
