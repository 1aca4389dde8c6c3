//! The `mailboxes` table: one row per mailbox the service has seen, with its connection state,
//! its encrypted tokens (read and rewritten by [`super::tokens`]), its counters and its last
//! error.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sqlx::Row;

use super::{ConnectionState, ErrorSource, Store, StoreError, tokens::token_context};
use crate::domain::Mailbox;

/// The account a mailbox is connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedAccount {
    pub object_id: String,
    pub account: Option<String>,
}

/// A completed sign-in, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewConnection {
    pub mailbox: Mailbox,
    pub account: String,
    pub object_id: Option<String>,
    pub tenant_id: Option<String>,
    /// The primary SMTP address Graph reported.
    pub sending_address: Option<String>,
    pub scopes: Vec<String>,
    pub access_token: SecretString,
    pub access_token_expires_at: DateTime<Utc>,
    pub refresh_token: SecretString,
}

/// Send outcomes of one mailbox not yet written to the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendTally {
    pub sent: u64,
    pub failed: u64,
    pub last_sent_at: Option<DateTime<Utc>>,
    /// The latest outcome: success, or the failure's operator-facing message.
    pub last_outcome: Option<Result<(), String>>,
}

impl SendTally {
    /// Counts one send.
    pub fn add(&mut self, outcome: Result<DateTime<Utc>, String>) {
        match outcome {
            Ok(at) => {
                self.sent += 1;
                self.last_sent_at = Some(self.last_sent_at.map_or(at, |last| last.max(at)));
                self.last_outcome = Some(Ok(()));
            }
            Err(message) => {
                self.failed += 1;
                self.last_outcome = Some(Err(message));
            }
        }
    }

    /// Folds a later tally into this one.
    pub fn merge(&mut self, later: SendTally) {
        self.sent += later.sent;
        self.failed += later.failed;
        self.last_sent_at = match (self.last_sent_at, later.last_sent_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if later.last_outcome.is_some() {
            self.last_outcome = later.last_outcome;
        }
    }
}

impl Store {
    /// Where the mailbox's connection stands; `None` when the store has no row for it.
    pub async fn connection_state(
        &self,
        mailbox: &Mailbox,
    ) -> Result<Option<ConnectionState>, StoreError> {
        let row = sqlx::query("SELECT state FROM mailboxes WHERE mailbox = $1")
            .bind(mailbox.as_str())
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| super::state_column(&row, "state", "mailboxes", mailbox.as_str()))
            .transpose()
    }

    /// The mailboxes that hold tokens and can send.
    pub async fn connected_mailboxes(&self) -> Result<Vec<Mailbox>, StoreError> {
        let rows = sqlx::query("SELECT mailbox FROM mailboxes WHERE state = $1 ORDER BY mailbox")
            .bind(ConnectionState::Connected)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| Ok(Mailbox::from_stored(r.try_get(0)?)))
            .collect()
    }

    /// The account the mailbox is connected to (also while it must be reauthorized); `None`
    /// when it is not connected or was connected before object ids were kept.
    pub async fn pinned_account(
        &self,
        mailbox: &Mailbox,
    ) -> Result<Option<PinnedAccount>, StoreError> {
        let row = sqlx::query(
            "SELECT object_id, account FROM mailboxes \
             WHERE mailbox = $1 AND state <> $2 AND object_id IS NOT NULL",
        )
        .bind(mailbox.as_str())
        .bind(ConnectionState::NotConnected)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(PinnedAccount {
                object_id: row.try_get("object_id")?,
                account: row.try_get("account")?,
            })
        })
        .transpose()
    }

    /// Stores a completed sign-in: the mailbox is connected from now on. Waits for a refresh
    /// in flight (the token lease), so the new consent is written last.
    pub async fn save_connection(
        &self,
        connection: &NewConnection,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let lease = self.lease_tokens(&connection.mailbox).await?;
        self.write_connection(connection, now).await?;
        if let Some(lease) = lease {
            lease.release().await?;
        }
        Ok(())
    }

    async fn write_connection(
        &self,
        connection: &NewConnection,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mailbox = connection.mailbox.as_str();
        let cipher = self.cipher();
        sqlx::query(
            "INSERT INTO mailboxes (mailbox, state, account, object_id, tenant_id, scopes, \
               access_token, access_token_expires_at, refresh_token, connected_at, \
               last_refreshed_at, last_error, last_error_source, token_generation, created_at, \
               updated_at, sending_address) \
             VALUES ($1, $10, $2, $3, $4, $5, $6, $7, $8, $9, $9, NULL, NULL, 1, $9, $9, $11) \
             ON CONFLICT (mailbox) DO UPDATE SET state = $10, account = $2, \
               object_id = $3, tenant_id = $4, scopes = $5, access_token = $6, \
               access_token_expires_at = $7, refresh_token = $8, connected_at = $9, \
               last_refreshed_at = $9, last_error = NULL, last_error_source = NULL, \
               token_generation = mailboxes.token_generation + 1, updated_at = $9, \
               sending_address = $11",
        )
        .bind(mailbox)
        .bind(&connection.account)
        .bind(connection.object_id.as_deref())
        .bind(connection.tenant_id.as_deref())
        .bind(connection.scopes.join(" "))
        .bind(cipher.seal(
            &token_context(mailbox, "access_token"),
            &connection.access_token,
        ))
        .bind(connection.access_token_expires_at.timestamp_millis())
        .bind(cipher.seal(
            &token_context(mailbox, "refresh_token"),
            &connection.refresh_token,
        ))
        .bind(now.timestamp_millis())
        .bind(ConnectionState::Connected)
        .bind(connection.sending_address.as_deref())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records what failed and what to do, creating the mailbox's row if needed.
    pub async fn set_last_error(
        &self,
        mailbox: &Mailbox,
        source: ErrorSource,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO mailboxes (mailbox, last_error, last_error_source, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (mailbox) DO UPDATE SET last_error = $2, last_error_source = $3, \
               updated_at = $4",
        )
        .bind(mailbox.as_str())
        .bind(message)
        .bind(source)
        .bind(now.timestamp_millis())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records that Exchange stopped the mailbox sending, until when, and why.
    pub async fn pause_sending(
        &self,
        mailbox: &Mailbox,
        until: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE mailboxes SET paused_until = $2, pause_reason = $3, updated_at = $4 \
             WHERE mailbox = $1",
        )
        .bind(mailbox.as_str())
        .bind(until.timestamp_millis())
        .bind(reason)
        .bind(now.timestamp_millis())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Microsoft no longer accepts the mailbox's refresh token: the owner must sign in again.
    pub async fn mark_reauthorization_required(
        &self,
        mailbox: &Mailbox,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE mailboxes SET state = $4, last_error = $2, last_error_source = $5, \
               updated_at = $3 \
             WHERE mailbox = $1 AND state = $6",
        )
        .bind(mailbox.as_str())
        .bind(message)
        .bind(now.timestamp_millis())
        .bind(ConnectionState::ReauthorizationRequired)
        .bind(ErrorSource::Token)
        .bind(ConnectionState::Connected)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Adds a batch of send outcomes to a mailbox's counters. The last outcome decides
    /// `last_error`: a failure sets it, a success clears an earlier send error. Without
    /// `create_row`, a mailbox the store does not know is left out.
    pub async fn record_sends(
        &self,
        mailbox: &Mailbox,
        sends: &SendTally,
        now: DateTime<Utc>,
        create_row: bool,
    ) -> Result<(), StoreError> {
        let error = match &sends.last_outcome {
            Some(Err(message)) => Some(message.as_str()),
            _ => None,
        };
        let succeeded_last = matches!(sends.last_outcome, Some(Ok(())));
        let sql: &'static str = if create_row {
            &RECORD_SENDS_CREATING
        } else {
            &RECORD_SENDS_KNOWN_ONLY
        };
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(mailbox.as_str())
            .bind(i64::try_from(sends.sent).unwrap_or(i64::MAX))
            .bind(i64::try_from(sends.failed).unwrap_or(i64::MAX))
            .bind(sends.last_sent_at.map(|t| t.timestamp_millis()))
            .bind(error)
            .bind(now.timestamp_millis())
            .bind(succeeded_last)
            .bind(ErrorSource::Send)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Forgets the mailbox's tokens and pending sign-ins; counters stay. Returns whether the
    /// mailbox was known. Waits for a refresh in flight (the token lease).
    pub async fn disconnect(
        &self,
        mailbox: &Mailbox,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let lease = self.lease_tokens(mailbox).await?;
        let known = self.forget_tokens(mailbox, now).await?;
        if let Some(lease) = lease {
            lease.release().await?;
        }
        Ok(known)
    }

    async fn forget_tokens(
        &self,
        mailbox: &Mailbox,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let updated = sqlx::query(
            "UPDATE mailboxes SET state = $3, access_token = NULL, \
               access_token_expires_at = NULL, refresh_token = NULL, scopes = '', \
               object_id = NULL, sending_address = NULL, \
               last_error = NULL, last_error_source = NULL, \
               token_generation = token_generation + 1, updated_at = $2 \
             WHERE mailbox = $1",
        )
        .bind(mailbox.as_str())
        .bind(now.timestamp_millis())
        .bind(ConnectionState::NotConnected)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM pending_authorizations WHERE mailbox = $1")
            .bind(mailbox.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(updated > 0)
    }
}

/// The counters' update when a send is counted.
const RECORD_SENDS_UPDATE: &str = "sent_total = mailboxes.sent_total + $2, \
       failed_total = mailboxes.failed_total + $3, \
       last_sent_at = COALESCE($4, mailboxes.last_sent_at), \
       last_error = CASE WHEN $5 IS NOT NULL THEN $5 \
                         WHEN $7 AND mailboxes.last_error_source = $8 THEN NULL \
                         ELSE mailboxes.last_error END, \
       last_error_source = CASE WHEN $5 IS NOT NULL THEN $8 \
                                WHEN $7 AND mailboxes.last_error_source = $8 THEN NULL \
                                ELSE mailboxes.last_error_source END, \
       updated_at = $6";

/// Counts sends, creating the mailbox's row if needed (the sandbox: any address may send).
static RECORD_SENDS_CREATING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO mailboxes (mailbox, sent_total, failed_total, last_sent_at, last_error, \
           last_error_source, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, CASE WHEN $5 IS NULL THEN NULL ELSE $8 END, $6, $6) \
         ON CONFLICT (mailbox) DO UPDATE SET {RECORD_SENDS_UPDATE}"
    )
});

/// Counts sends of a mailbox the store knows; nothing for an unknown one.
static RECORD_SENDS_KNOWN_ONLY: LazyLock<String> =
    LazyLock::new(|| format!("UPDATE mailboxes SET {RECORD_SENDS_UPDATE} WHERE mailbox = $1"));

/// The stored space-separated scopes as a list.
pub(crate) fn split_scopes(scopes: &str) -> Vec<String> {
    scopes.split_whitespace().map(str::to_owned).collect()
}
