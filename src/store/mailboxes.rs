//! The `mailboxes` table: one row per mailbox the service has seen, with its connection state,
//! its encrypted tokens (read and rewritten by [`super::tokens`]), its counters and its last
//! error.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sqlx::{Row, any::AnyRow};

use super::{ConnectionState, ErrorSource, Store, StoreError, state_column, tokens::token_context};
use crate::{clock::from_millis, domain::Mailbox};

/// A mailbox as Status reports it.
#[derive(Debug, Clone)]
pub struct MailboxRecord {
    pub mailbox: Mailbox,
    pub state: ConnectionState,
    pub account: Option<String>,
    pub scopes: Vec<String>,
    pub connected_at: Option<DateTime<Utc>>,
    pub access_token_expires_at: Option<DateTime<Utc>>,
    pub last_refreshed_at: Option<DateTime<Utc>>,
    pub last_sent_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub sent_total: u64,
    pub failed_total: u64,
    /// The address mail goes out from, when Graph told it at Connect.
    pub sending_address: Option<String>,
    /// Until when Exchange has stopped the mailbox sending, and why.
    pub paused_until: Option<DateTime<Utc>>,
    pub pause_reason: Option<String>,
    /// Configured permissions the mailbox has not granted (filled in by the post office,
    /// which knows the configuration).
    pub missing_scopes: Vec<String>,
}

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
    /// One mailbox's status, `None` when the store has never seen it.
    pub async fn mailbox(
        &self,
        mailbox: &Mailbox,
        now: DateTime<Utc>,
    ) -> Result<Option<MailboxRecord>, StoreError> {
        let sql = format!("{STATUS_SELECT} WHERE s.mailbox = $3");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now.timestamp_millis())
            .bind(ConnectionState::NotConnected)
            .bind(mailbox.as_str())
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| status_from_row(&r)).transpose()
    }

    /// Every mailbox the store knows, by address.
    pub async fn mailboxes(&self, now: DateTime<Utc>) -> Result<Vec<MailboxRecord>, StoreError> {
        let sql = format!("{STATUS_SELECT} ORDER BY s.mailbox");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now.timestamp_millis())
            .bind(ConnectionState::NotConnected)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(status_from_row).collect()
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

    /// Stores a completed sign-in: the mailbox is connected from now on.
    pub async fn save_connection(
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
    /// mailbox was known.
    pub async fn disconnect(
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

/// Every mailbox with a row, and those with only a sign-in link out (a link makes no row).
/// `$1` is now, `$2` the state of a mailbox that has only a link.
const STATUS_SELECT: &str = "SELECT * FROM ( \
       SELECT m.mailbox, m.state, m.account, m.scopes, m.connected_at, \
         m.access_token_expires_at, m.last_refreshed_at, m.last_sent_at, m.last_error, \
         m.sent_total, m.failed_total, m.sending_address, m.paused_until, m.pause_reason, \
         (SELECT COUNT(*) FROM pending_authorizations p \
           WHERE p.mailbox = m.mailbox AND p.expires_at > $1) AS pending \
       FROM mailboxes m \
       UNION ALL \
       SELECT p.mailbox, $2, NULL, '', NULL, NULL, NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, \
         COUNT(*) \
       FROM pending_authorizations p \
       WHERE p.expires_at > $1 \
         AND NOT EXISTS (SELECT 1 FROM mailboxes m WHERE m.mailbox = p.mailbox) \
       GROUP BY p.mailbox \
     ) s";

fn status_from_row(row: &AnyRow) -> Result<MailboxRecord, StoreError> {
    let mailbox: String = row.try_get("mailbox")?;
    let stored: ConnectionState = state_column(row, "state", "mailboxes", &mailbox)?;
    let pending: i64 = row.try_get("pending")?;
    let state = if stored == ConnectionState::NotConnected && pending > 0 {
        ConnectionState::Pending
    } else {
        stored
    };
    let time = |name: &str| -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        Ok(row.try_get::<Option<i64>, _>(name)?.map(from_millis))
    };
    Ok(MailboxRecord {
        mailbox: Mailbox::from_stored(mailbox),
        state,
        account: row.try_get("account")?,
        scopes: split_scopes(&row.try_get::<String, _>("scopes")?),
        connected_at: time("connected_at")?,
        access_token_expires_at: time("access_token_expires_at")?,
        last_refreshed_at: time("last_refreshed_at")?,
        last_sent_at: time("last_sent_at")?,
        last_error: row.try_get("last_error")?,
        sent_total: u64::try_from(row.try_get::<i64, _>("sent_total")?).unwrap_or(0),
        failed_total: u64::try_from(row.try_get::<i64, _>("failed_total")?).unwrap_or(0),
        sending_address: row.try_get("sending_address")?,
        paused_until: time("paused_until")?,
        pause_reason: row.try_get("pause_reason")?,
        missing_scopes: Vec::new(),
    })
}

/// The stored space-separated scopes as a list.
pub(crate) fn split_scopes(scopes: &str) -> Vec<String> {
    scopes.split_whitespace().map(str::to_owned).collect()
}
