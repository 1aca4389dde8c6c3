//! Reading the outbox: one message, pages of messages, a batch's counts, a message's body, and
//! events after a sequence number.

use sqlx::{Row, any::AnyRow};

use super::{
    MessageState, Store, StoreError,
    outbox::{BatchRecord, MessageFilter, MessageRecord, RECORD_COLUMNS, record_from_row},
    state_column,
};
use crate::domain::{Mailbox, MailboxPattern};

impl Store {
    /// One message's status, `None` when unknown or purged.
    pub async fn queued_message(&self, id: &str) -> Result<Option<MessageRecord>, StoreError> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM outbox_messages WHERE message_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| record_from_row(&row)).transpose()
    }

    /// A page of messages, newest first, after the `(accepted_at, message_id)` of `after`.
    pub async fn queued_messages(
        &self,
        filter: &MessageFilter,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let mut query = Filtered::new(format!(
            "SELECT {RECORD_COLUMNS} FROM outbox_messages WHERE 1 = 1"
        ));
        if !query.filter(filter) {
            return Ok(Vec::new());
        }
        if let Some((at, id)) = after {
            let a = query.push(Bind::Int(at));
            let b = query.push(Bind::Int(at));
            let c = query.push(Bind::Text(id));
            query.sql.push_str(&format!(
                " AND (accepted_at < {a} OR (accepted_at = {b} AND message_id < {c}))"
            ));
        }
        let limit_place = query.push(Bind::Int(i64::from(limit)));
        query.sql.push_str(&format!(
            " ORDER BY accepted_at DESC, message_id DESC LIMIT {limit_place}"
        ));
        let rows = query.fetch(self).await?;
        rows.iter().map(record_from_row).collect()
    }

    /// Events after sequence `after`, oldest first, with their sequence numbers.
    pub async fn events_after(
        &self,
        after: u64,
        filter: &MessageFilter,
        limit: u32,
    ) -> Result<Vec<(u64, MessageRecord)>, StoreError> {
        let mut query = Filtered::new(format!(
            "SELECT sequence, {RECORD_COLUMNS} FROM outbox_events WHERE 1 = 1"
        ));
        if !query.filter(filter) {
            return Ok(Vec::new());
        }
        let a = query.push(Bind::Int(i64::try_from(after).unwrap_or(i64::MAX)));
        let l = query.push(Bind::Int(i64::from(limit)));
        query
            .sql
            .push_str(&format!(" AND sequence > {a} ORDER BY sequence LIMIT {l}"));
        let rows = query.fetch(self).await?;
        rows.iter()
            .map(|row| {
                let sequence: i64 = row.try_get("sequence")?;
                Ok((u64::try_from(sequence).unwrap_or(0), record_from_row(row)?))
            })
            .collect()
    }

    /// The highest event sequence so far (0 when none).
    pub async fn last_event_sequence(&self) -> Result<u64, StoreError> {
        let last: Option<i64> = sqlx::query("SELECT MAX(sequence) FROM outbox_events")
            .fetch_one(self.pool())
            .await?
            .try_get(0)?;
        Ok(last.and_then(|l| u64::try_from(l).ok()).unwrap_or(0))
    }

    /// A batch's counts, `None` when unknown or purged.
    pub async fn batch(&self, batch_id: &str) -> Result<Option<BatchRecord>, StoreError> {
        let Some(head) =
            sqlx::query("SELECT mailbox, total FROM outbox_batches WHERE batch_id = $1")
                .bind(batch_id)
                .fetch_optional(self.pool())
                .await?
        else {
            return Ok(None);
        };
        let mut record = BatchRecord {
            batch_id: batch_id.to_owned(),
            mailbox: Some(Mailbox::from_stored(head.try_get("mailbox")?)),
            total: u64::try_from(head.try_get::<i64, _>("total")?).unwrap_or(0),
            ..Default::default()
        };
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM outbox_messages WHERE batch_id = $1 GROUP BY state",
        )
        .bind(batch_id)
        .fetch_all(self.pool())
        .await?;
        for row in rows {
            let state: MessageState = state_column(&row, "state", "outbox_messages", batch_id)?;
            let n = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
            match state {
                MessageState::Queued | MessageState::Sending => record.queued += n,
                MessageState::Sent => record.sent += n,
                MessageState::Failed => record.failed += n,
                MessageState::Unknown => record.unknown += n,
                MessageState::Cancelled => record.cancelled += n,
            }
        }
        Ok(Some(record))
    }

    /// What a message is sent from: its body and, for a SendBulk message, its batch's template.
    pub async fn message_body(
        &self,
        id: &str,
    ) -> Result<Option<(Vec<u8>, Option<Vec<u8>>)>, StoreError> {
        let row = sqlx::query(
            "SELECT m.body, b.template FROM outbox_messages m \
             LEFT JOIN outbox_batches b ON b.batch_id = m.batch_id WHERE m.message_id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let body: Option<Vec<u8>> = row.try_get("body")?;
        let template: Option<Vec<u8>> = row.try_get("template")?;
        Ok(body.map(|body| (body, template)))
    }
}

enum Bind {
    Text(String),
    Int(i64),
}

/// A query whose WHERE grows with a [`MessageFilter`], numbering its placeholders.
struct Filtered {
    sql: String,
    binds: Vec<Bind>,
}

impl Filtered {
    fn new(sql: String) -> Self {
        Self {
            sql,
            binds: Vec::new(),
        }
    }

    /// Adds a bound value; returns its placeholder (`$n`).
    fn push(&mut self, bind: Bind) -> String {
        self.binds.push(bind);
        format!("${}", self.binds.len())
    }

    /// Adds the filter's conditions; false when it can match nothing.
    fn filter(&mut self, filter: &MessageFilter) -> bool {
        if let Some(mailbox) = &filter.mailbox {
            let place = self.push(Bind::Text(mailbox.to_string()));
            self.sql.push_str(&format!(" AND mailbox = {place}"));
        } else if let Some(allowed) = &filter.allowed {
            if allowed.is_empty() {
                return false;
            }
            // A domain pattern is a LIKE; results are checked against the patterns again.
            let conditions: Vec<String> = allowed
                .iter()
                .map(|pattern| match pattern {
                    MailboxPattern::Exact(mailbox) => {
                        format!("mailbox = {}", self.push(Bind::Text(mailbox.to_string())))
                    }
                    MailboxPattern::Domain(domain) => {
                        format!(
                            "mailbox LIKE {}",
                            self.push(Bind::Text(format!("%@{domain}")))
                        )
                    }
                })
                .collect();
            self.sql
                .push_str(&format!(" AND ({})", conditions.join(" OR ")));
        }
        if let Some(state) = filter.state {
            let place = self.push(Bind::Text(state.as_str().to_owned()));
            self.sql.push_str(&format!(" AND state = {place}"));
        }
        if let Some(batch) = &filter.batch_id {
            let place = self.push(Bind::Text(batch.clone()));
            self.sql.push_str(&format!(" AND batch_id = {place}"));
        }
        true
    }

    async fn fetch(self, store: &Store) -> Result<Vec<AnyRow>, StoreError> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(self.sql));
        for bind in self.binds {
            query = match bind {
                Bind::Text(text) => query.bind(text),
                Bind::Int(value) => query.bind(value),
            };
        }
        Ok(query.fetch_all(store.pool()).await?)
    }
}
