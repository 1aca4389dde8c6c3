//! Idempotency keys: a send happens at most once per key and mailbox within 24 hours, across
//! replicas and restarts (the keys live in the store).
//!
//! The first call claims the key and sends. A later call with the same request gets the stored
//! answer with `deduplicated = true`; with a different request, ALREADY_EXISTS. A call that
//! arrives while the first is sending waits for its outcome. When the first send's outcome is
//! unknown (no answer from Microsoft), later calls are refused rather than risking a second
//! copy: the caller decides, with a new key.

use std::time::Duration;

use chrono::DateTime;

use super::{Error, SendReceipt};
use crate::{
    clock::Clock,
    domain::{IdempotencyKey, Mailbox},
    store::{Claim, IdempotencyRecord, IdempotencyStatus, Store},
    transport::SendError,
};

/// How long a key is remembered.
pub const KEY_LIFETIME_HOURS: i64 = 24;
/// A claim older than this that never finished belongs to a call that died mid-send.
const ABANDONED_AFTER_MINUTES: i64 = 10;
/// How long a second call waits for the first to finish.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(100);

/// Claims `key` for this send. `Ok(Some(receipt))`: an earlier identical call already sent.
pub(super) async fn claim(
    store: &Store,
    clock: &dyn Clock,
    mailbox: &Mailbox,
    key: &IdempotencyKey,
    request_hash: &str,
    message_id: &str,
) -> Result<Option<SendReceipt>, Error> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
    loop {
        let now = clock.now();
        let lifetime = chrono::Duration::hours(KEY_LIFETIME_HOURS);
        let record = match store
            .claim_idempotency(
                mailbox,
                key.as_str(),
                request_hash,
                message_id,
                now,
                lifetime,
            )
            .await?
        {
            Claim::Claimed => return Ok(None),
            Claim::Existing(record) => record,
        };
        if record.request_hash != request_hash {
            return Err(Error::KeyReused {
                message_id: record.message_id,
            });
        }
        let abandoned =
            now - record.created_at > chrono::Duration::minutes(ABANDONED_AFTER_MINUTES);
        match record.status {
            IdempotencyStatus::Sent => return Ok(Some(deduplicated(&record))),
            IdempotencyStatus::Unknown => return Err(unknown_outcome(&record)),
            IdempotencyStatus::InProgress if abandoned => return Err(unknown_outcome(&record)),
            IdempotencyStatus::InProgress if tokio::time::Instant::now() >= deadline => {
                return Err(Error::KeyInUse {
                    message_id: record.message_id,
                });
            }
            IdempotencyStatus::InProgress => tokio::time::sleep(POLL_EVERY).await,
        }
    }
}

/// Records the send's outcome under its key.
pub(super) async fn finish(
    store: &Store,
    mailbox: &Mailbox,
    key: &IdempotencyKey,
    result: &Result<DateTime<chrono::Utc>, SendError>,
) {
    let recorded = match result {
        Ok(accepted_at) => {
            store
                .finish_idempotency(
                    mailbox,
                    key.as_str(),
                    IdempotencyStatus::Sent,
                    Some(*accepted_at),
                )
                .await
        }
        Err(error) if error.may_have_been_sent() => {
            store
                .finish_idempotency(mailbox, key.as_str(), IdempotencyStatus::Unknown, None)
                .await
        }
        // Certainly not sent: free the key so the caller can retry with it.
        Err(_) => store.release_idempotency(mailbox, key.as_str()).await,
    };
    if let Err(error) = recorded {
        tracing::error!(%error, "cannot record the idempotency key's outcome");
    }
}

fn deduplicated(record: &IdempotencyRecord) -> SendReceipt {
    SendReceipt {
        message_id: record.message_id.clone(),
        accepted_at: record.accepted_at.unwrap_or(record.created_at),
        deduplicated: true,
    }
}

fn unknown_outcome(record: &IdempotencyRecord) -> Error {
    Error::EarlierOutcomeUnknown {
        message_id: record.message_id.clone(),
    }
}
