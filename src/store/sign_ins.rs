//! The `pending_authorizations` table: sign-in links handed out and not yet used. Each row is
//! keyed by a hash of the link's `state` and holds its PKCE verifier, encrypted; a callback
//! takes (deletes) it, so a link works once, on whichever replica the browser lands.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sqlx::Row;

use super::{Store, StoreError};
use crate::{clock::from_millis, domain::Mailbox};

/// A sign-in link that has been handed out and not yet used.
#[derive(Debug, Clone)]
pub struct PendingAuthorization {
    /// SHA-256 of the `state` parameter (the state itself is never stored).
    pub state_hash: String,
    pub mailbox: Mailbox,
    pub pkce_verifier: SecretString,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Store {
    /// Stores a sign-in link's state and PKCE verifier until the callback.
    pub async fn insert_pending(&self, pending: &PendingAuthorization) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO mailboxes (mailbox, created_at, updated_at) VALUES ($1, $2, $2) \
             ON CONFLICT (mailbox) DO NOTHING",
        )
        .bind(pending.mailbox.as_str())
        .bind(pending.created_at.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO pending_authorizations \
               (state_hash, mailbox, pkce_verifier, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&pending.state_hash)
        .bind(pending.mailbox.as_str())
        .bind(self.cipher().seal(
            &pending_context(&pending.state_hash),
            &pending.pkce_verifier,
        ))
        .bind(pending.created_at.timestamp_millis())
        .bind(pending.expires_at.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes and returns a pending sign-in: a state can be used once, on any replica.
    /// Expired ones are returned too, so the caller can say that the link expired.
    pub async fn take_pending(
        &self,
        state_hash: &str,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM pending_authorizations WHERE state_hash = $1 \
             RETURNING mailbox, pkce_verifier, created_at, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let verifier: Vec<u8> = row.try_get("pkce_verifier")?;
        let mailbox: String = row.try_get("mailbox")?;
        let pkce_verifier = self
            .cipher
            .open(&pending_context(state_hash), &verifier)
            .map_err(|_| StoreError::Undecryptable(mailbox.clone()))?;
        Ok(Some(PendingAuthorization {
            state_hash: state_hash.to_owned(),
            mailbox: Mailbox::from_stored(mailbox),
            pkce_verifier,
            created_at: from_millis(row.try_get("created_at")?),
            expires_at: from_millis(row.try_get("expires_at")?),
        }))
    }

    /// Deletes sign-in links past their expiry. Returns how many went.
    pub(crate) async fn purge_expired_sign_ins(
        &self,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM pending_authorizations WHERE expires_at <= $1")
                .bind(now.timestamp_millis())
                .execute(self.pool())
                .await?
                .rows_affected(),
        )
    }
}

fn pending_context(state_hash: &str) -> String {
    format!("pending|{state_hash}")
}
