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
    /// The caller who asked for the link.
    pub requested_by: Option<String>,
}

/// How many sign-in links may be out at once.
#[derive(Debug, Clone, Copy)]
pub struct LinkLimits {
    /// Per mailbox: a new link beyond it replaces the oldest.
    pub per_mailbox: u32,
    /// In all: beyond it, no new link until some are used or expire.
    pub total: u64,
}

/// Whether a link was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Yes,
    /// `total` links are out already.
    Full {
        outstanding: u64,
    },
}

impl Store {
    /// Stores a sign-in link's state and PKCE verifier until the callback, within `limits`.
    /// No mailbox row is made: a link for an address that never connects leaves nothing behind
    /// once it expires.
    pub async fn insert_pending(
        &self,
        pending: &PendingAuthorization,
        limits: LinkLimits,
    ) -> Result<Stored, StoreError> {
        let mut tx = self.pool().begin().await?;
        // The write first: SQLite cannot turn a read into a write lock while another
        // connection reads (it answers "database is locked" at once).
        sqlx::query(
            "DELETE FROM pending_authorizations WHERE mailbox = $1 AND state_hash NOT IN \
               (SELECT state_hash FROM pending_authorizations WHERE mailbox = $1 \
                ORDER BY created_at DESC LIMIT $2)",
        )
        .bind(pending.mailbox.as_str())
        .bind(i64::from(limits.per_mailbox.saturating_sub(1)))
        .execute(&mut *tx)
        .await?;
        let outstanding: i64 =
            sqlx::query("SELECT COUNT(*) FROM pending_authorizations WHERE expires_at > $1")
                .bind(pending.created_at.timestamp_millis())
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        let outstanding = u64::try_from(outstanding).unwrap_or(0);
        if outstanding >= limits.total {
            return Ok(Stored::Full { outstanding });
        }
        sqlx::query(
            "INSERT INTO pending_authorizations \
               (state_hash, mailbox, pkce_verifier, created_at, expires_at, requested_by) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&pending.state_hash)
        .bind(pending.mailbox.as_str())
        .bind(self.cipher().seal(
            &pending_context(&pending.state_hash),
            &pending.pkce_verifier,
        ))
        .bind(pending.created_at.timestamp_millis())
        .bind(pending.expires_at.timestamp_millis())
        .bind(pending.requested_by.as_deref())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Stored::Yes)
    }

    /// Removes and returns a pending sign-in: a state can be used once, on any replica.
    /// Expired ones are returned too, so the caller can say that the link expired.
    pub async fn take_pending(
        &self,
        state_hash: &str,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM pending_authorizations WHERE state_hash = $1 \
             RETURNING mailbox, pkce_verifier, created_at, expires_at, requested_by",
        )
        .bind(state_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let verifier: Vec<u8> = row.try_get("pkce_verifier")?;
        let mailbox: String = row.try_get("mailbox")?;
        let pkce_verifier = self
            .cipher()
            .open(&pending_context(state_hash), &verifier)
            .map_err(|_| StoreError::Undecryptable(mailbox.clone()))?;
        Ok(Some(PendingAuthorization {
            state_hash: state_hash.to_owned(),
            mailbox: Mailbox::from_stored(mailbox),
            pkce_verifier,
            created_at: from_millis(row.try_get("created_at")?),
            expires_at: from_millis(row.try_get("expires_at")?),
            requested_by: row.try_get("requested_by")?,
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
