//! Status's view of the `mailboxes` table: one record per mailbox the store knows, and per
//! mailbox with only a sign-in link out.

use chrono::{DateTime, Utc};
use sqlx::{Row, any::AnyRow};

use super::{ConnectionState, Store, StoreError, mailboxes::split_scopes, state_column};
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
    /// The outbox's queue and limit usage (filled in by the post office).
    pub queue: super::QueueUsage,
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
}

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
        queue: super::QueueUsage::default(),
    })
}
