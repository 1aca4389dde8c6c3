//! Reading and rewriting a mailbox's tokens, under a lock that spans replicas.
//!
//! In one process the refresh engine's single flight already serialises refreshes. Several
//! replicas on PostgreSQL also take a per-mailbox transaction-scoped advisory lock, so a replica
//! that waited re-reads the token the other one stored instead of refreshing again (which would
//! race two refresh-token rotations). SQLite is one process's file and needs no more.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::{Any, Executor, Row, Transaction};

use secrecy::SecretString;

use super::{
    Backend, ConnectionState, ErrorSource, Store, StoreError, mailboxes::split_scopes, state_column,
};
use crate::{clock::from_millis, domain::Mailbox};

/// The tokens of a connected mailbox.
#[derive(Debug, Clone)]
pub struct StoredTokens {
    pub state: ConnectionState,
    pub access_token: SecretString,
    pub access_token_expires_at: DateTime<Utc>,
    pub refresh_token: SecretString,
    pub scopes: Vec<String>,
    pub last_refreshed_at: Option<DateTime<Utc>>,
    /// Increases with every write of tokens; tells a waiter whether someone else refreshed.
    pub generation: i64,
    /// The address mail goes out from, when Graph told it at Connect.
    pub sending_address: Option<String>,
}

/// Tokens returned by a refresh.
#[derive(Debug, Clone)]
pub struct RefreshedTokens {
    pub access_token: SecretString,
    pub access_token_expires_at: DateTime<Utc>,
    pub refresh_token: SecretString,
    /// The granted scopes, when Microsoft listed them.
    pub scopes: Option<Vec<String>>,
}

/// Exclusive access to one mailbox's tokens until [`TokenLock::release`].
pub struct TokenLock<'s> {
    store: &'s Store,
    mailbox: Mailbox,
    transaction: Option<Transaction<'static, Any>>,
}

impl Store {
    /// The mailbox's tokens, `None` when it holds none.
    pub async fn tokens(&self, mailbox: &Mailbox) -> Result<Option<StoredTokens>, StoreError> {
        read_tokens(self, self.pool(), mailbox).await
    }

    /// Locks the mailbox's tokens against other replicas (PostgreSQL) until released.
    pub async fn lock_tokens(&self, mailbox: &Mailbox) -> Result<TokenLock<'_>, StoreError> {
        let transaction = match self.backend() {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let mut tx = self.pool().begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(lock_id(mailbox))
                    .execute(&mut *tx)
                    .await?;
                Some(tx)
            }
        };
        Ok(TokenLock {
            store: self,
            mailbox: mailbox.clone(),
            transaction,
        })
    }
}

impl TokenLock<'_> {
    /// The tokens as stored now (another replica may have just refreshed them).
    pub async fn tokens(&mut self) -> Result<Option<StoredTokens>, StoreError> {
        match self.transaction.as_mut() {
            Some(tx) => read_tokens(self.store, &mut **tx, &self.mailbox).await,
            None => read_tokens(self.store, self.store.pool(), &self.mailbox).await,
        }
    }

    /// Stores a refresh's result: the rotated refresh token replaces the old one.
    pub async fn save_refreshed(
        &mut self,
        tokens: &RefreshedTokens,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mailbox = self.mailbox.as_str();
        let cipher = self.store.cipher();
        let query = sqlx::query(
            "UPDATE mailboxes SET access_token = $2, access_token_expires_at = $3, \
               refresh_token = $4, scopes = COALESCE($5, scopes), last_refreshed_at = $6, \
               token_generation = token_generation + 1, updated_at = $6, \
               last_error = CASE WHEN last_error_source = $7 THEN NULL ELSE last_error END, \
               last_error_source = CASE WHEN last_error_source = $7 THEN NULL \
                                        ELSE last_error_source END \
             WHERE mailbox = $1 AND state = $8",
        )
        .bind(mailbox)
        .bind(cipher.seal(
            &token_context(mailbox, "access_token"),
            &tokens.access_token,
        ))
        .bind(tokens.access_token_expires_at.timestamp_millis())
        .bind(cipher.seal(
            &token_context(mailbox, "refresh_token"),
            &tokens.refresh_token,
        ))
        .bind(tokens.scopes.as_ref().map(|s| s.join(" ")))
        .bind(now.timestamp_millis())
        .bind(ErrorSource::Token)
        .bind(ConnectionState::Connected);
        match self.transaction.as_mut() {
            Some(tx) => query.execute(&mut **tx).await?,
            None => query.execute(self.store.pool()).await?,
        };
        Ok(())
    }

    /// Commits what was saved and lets other replicas in.
    pub async fn release(self) -> Result<(), StoreError> {
        if let Some(tx) = self.transaction {
            tx.commit().await?;
        }
        Ok(())
    }
}

async fn read_tokens<'e, E>(
    store: &Store,
    executor: E,
    mailbox: &Mailbox,
) -> Result<Option<StoredTokens>, StoreError>
where
    E: Executor<'e, Database = Any>,
{
    let row = sqlx::query(
        "SELECT state, access_token, access_token_expires_at, refresh_token, scopes, \
           last_refreshed_at, token_generation, sending_address \
         FROM mailboxes WHERE mailbox = $1",
    )
    .bind(mailbox.as_str())
    .fetch_optional(executor)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let access: Option<Vec<u8>> = row.try_get("access_token")?;
    let refresh: Option<Vec<u8>> = row.try_get("refresh_token")?;
    let expires: Option<i64> = row.try_get("access_token_expires_at")?;
    let (Some(access), Some(refresh), Some(expires)) = (access, refresh, expires) else {
        return Ok(None);
    };
    let undecryptable = || StoreError::Undecryptable(mailbox.to_string());
    let cipher = store.cipher();
    Ok(Some(StoredTokens {
        state: state_column(&row, "state", "mailboxes", mailbox.as_str())?,
        access_token: cipher
            .open(&token_context(mailbox.as_str(), "access_token"), &access)
            .map_err(|_| undecryptable())?,
        access_token_expires_at: from_millis(expires),
        refresh_token: cipher
            .open(&token_context(mailbox.as_str(), "refresh_token"), &refresh)
            .map_err(|_| undecryptable())?,
        scopes: split_scopes(&row.try_get::<String, _>("scopes")?),
        last_refreshed_at: row
            .try_get::<Option<i64>, _>("last_refreshed_at")?
            .map(from_millis),
        generation: row.try_get("token_generation")?,
        sending_address: row.try_get("sending_address")?,
    }))
}

/// A stable 64-bit advisory lock id per mailbox.
fn lock_id(mailbox: &Mailbox) -> i64 {
    let digest = Sha256::digest(format!("graph-mailer:{mailbox}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

pub(crate) fn token_context(mailbox: &str, column: &str) -> String {
    format!("{mailbox}|{column}")
}
