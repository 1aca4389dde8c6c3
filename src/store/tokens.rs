//! Reading and rewriting a mailbox's tokens.
//!
//! Refreshes are serialised by the token lease ([`super::leases`]): a replica that waited
//! re-reads the token the other one stored instead of refreshing again. The rotated tokens are
//! written with a compare-and-set on the generation, so a refresh that finishes after a new
//! Connect (or a Disconnect) never overwrites it.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sqlx::{Any, Executor, Row};

use super::{
    ConnectionState, ErrorSource, Store, StoreError, mailboxes::split_scopes, state_column,
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

/// What became of a refresh's write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// The tokens are stored.
    Stored,
    /// Someone wrote the tokens since they were read (a Connect, a Disconnect): nothing stored.
    Superseded,
}

impl Store {
    /// The mailbox's tokens, `None` when it holds none.
    pub async fn tokens(&self, mailbox: &Mailbox) -> Result<Option<StoredTokens>, StoreError> {
        read_tokens(self, self.pool(), mailbox).await
    }

    /// Stores a refresh's result (the rotated refresh token replaces the old one) if the tokens
    /// are still those of generation `read_generation`.
    pub async fn save_refreshed(
        &self,
        mailbox: &Mailbox,
        tokens: &RefreshedTokens,
        read_generation: i64,
        now: DateTime<Utc>,
    ) -> Result<Saved, StoreError> {
        let address = mailbox.as_str();
        let cipher = self.cipher();
        let updated = sqlx::query(
            "UPDATE mailboxes SET access_token = $2, access_token_expires_at = $3, \
               refresh_token = $4, scopes = COALESCE($5, scopes), last_refreshed_at = $6, \
               token_generation = token_generation + 1, updated_at = $6, \
               last_error = CASE WHEN last_error_source = $7 THEN NULL ELSE last_error END, \
               last_error_source = CASE WHEN last_error_source = $7 THEN NULL \
                                        ELSE last_error_source END \
             WHERE mailbox = $1 AND state = $8 AND token_generation = $9",
        )
        .bind(address)
        .bind(cipher.seal(
            &token_context(address, "access_token"),
            &tokens.access_token,
        ))
        .bind(tokens.access_token_expires_at.timestamp_millis())
        .bind(cipher.seal(
            &token_context(address, "refresh_token"),
            &tokens.refresh_token,
        ))
        .bind(tokens.scopes.as_ref().map(|s| s.join(" ")))
        .bind(now.timestamp_millis())
        .bind(ErrorSource::Token)
        .bind(ConnectionState::Connected)
        .bind(read_generation)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(if updated == 1 {
            Saved::Stored
        } else {
            Saved::Superseded
        })
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

pub(crate) fn token_context(mailbox: &str, column: &str) -> String {
    format!("{mailbox}|{column}")
}
