//! The admin page's tables: `admin_sign_ins` (sign-ins with Microsoft under way, keyed by a hash
//! of their `state`, with the PKCE verifier encrypted) and `admin_sessions` (keyed by a hash of
//! the session cookie). Both live in the store so that any replica can finish a sign-in or serve
//! a session.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sqlx::Row;

use super::{Store, StoreError};
use crate::clock::from_millis;

/// At most this many sign-ins may be under way: starting one needs no credentials.
pub const MAX_ADMIN_SIGN_INS: i64 = 1000;

/// A sign-in with Microsoft under way.
#[derive(Debug, Clone)]
pub struct AdminSignIn {
    pub state_hash: String,
    pub browser_hash: String,
    pub pkce_verifier: SecretString,
    pub nonce_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A signed-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSession {
    /// Who signed in, as the audit log names them.
    pub admin: String,
    /// How they got in, as the admin page wrote it.
    pub entry: String,
    pub expires_at: DateTime<Utc>,
}

impl Store {
    /// Stores a sign-in under way; `false` when too many are.
    pub async fn insert_admin_sign_in(&self, sign_in: &AdminSignIn) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM admin_sign_ins WHERE expires_at <= $1")
            .bind(sign_in.created_at.timestamp_millis())
            .execute(&mut *tx)
            .await?;
        let outstanding: i64 = sqlx::query("SELECT COUNT(*) FROM admin_sign_ins")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if outstanding >= MAX_ADMIN_SIGN_INS {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO admin_sign_ins \
               (state_hash, browser_hash, pkce_verifier, nonce_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&sign_in.state_hash)
        .bind(&sign_in.browser_hash)
        .bind(self.cipher().seal(
            &sign_in_context(&sign_in.state_hash),
            &sign_in.pkce_verifier,
        ))
        .bind(&sign_in.nonce_hash)
        .bind(sign_in.created_at.timestamp_millis())
        .bind(sign_in.expires_at.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Removes and returns a sign-in under way: a state works once.
    pub async fn take_admin_sign_in(
        &self,
        state_hash: &str,
    ) -> Result<Option<AdminSignIn>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM admin_sign_ins WHERE state_hash = $1 \
             RETURNING browser_hash, pkce_verifier, nonce_hash, created_at, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let verifier: Vec<u8> = row.try_get("pkce_verifier")?;
        let pkce_verifier = self
            .cipher()
            .open(&sign_in_context(state_hash), &verifier)
            .map_err(|_| StoreError::Undecryptable("an admin sign-in".to_owned()))?;
        Ok(Some(AdminSignIn {
            state_hash: state_hash.to_owned(),
            browser_hash: row.try_get("browser_hash")?,
            pkce_verifier,
            nonce_hash: row.try_get("nonce_hash")?,
            created_at: from_millis(row.try_get("created_at")?),
            expires_at: from_millis(row.try_get("expires_at")?),
        }))
    }

    /// Starts a session.
    pub async fn insert_admin_session(
        &self,
        id_hash: &str,
        session: &AdminSession,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO admin_sessions (id_hash, admin, entry, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_hash)
        .bind(&session.admin)
        .bind(&session.entry)
        .bind(now.timestamp_millis())
        .bind(session.expires_at.timestamp_millis())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The session with this hash, unless it has expired.
    pub async fn admin_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<AdminSession>, StoreError> {
        let row = sqlx::query(
            "SELECT admin, entry, expires_at FROM admin_sessions \
             WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(now.timestamp_millis())
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(AdminSession {
                admin: row.try_get("admin")?,
                entry: row.try_get("entry")?,
                expires_at: from_millis(row.try_get("expires_at")?),
            })
        })
        .transpose()
    }

    /// Ends a session (sign-out).
    pub async fn delete_admin_session(&self, id_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM admin_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Deletes expired sessions and sign-ins.
    pub(crate) async fn purge_expired_admin(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut purged = 0;
        for statement in [
            "DELETE FROM admin_sessions WHERE expires_at <= $1",
            "DELETE FROM admin_sign_ins WHERE expires_at <= $1",
        ] {
            purged += sqlx::query(statement)
                .bind(now.timestamp_millis())
                .execute(self.pool())
                .await?
                .rows_affected();
        }
        Ok(purged)
    }
}

fn sign_in_context(state_hash: &str) -> String {
    format!("admin-sign-in|{state_hash}")
}
