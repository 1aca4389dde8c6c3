//! The outbox's section: each mailbox's sending limits (Exchange Online's by default) and how
//! long messages are retried and kept.

use std::time::Duration;

use super::{RawSettings, validate::Problems};
use crate::variables;

/// A mailbox's sending limits, shared by every replica through the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacingLimits {
    pub messages_per_minute: u32,
    pub recipients_per_day: u64,
    pub requests_per_10_minutes: u64,
    pub upload_bytes_per_5_minutes: u64,
    /// `None`: no limit.
    pub external_recipients_per_day: Option<u64>,
    /// Graph requests in flight per mailbox.
    pub concurrency: usize,
}

impl Default for PacingLimits {
    /// Exchange Online's and Outlook's published limits.
    fn default() -> Self {
        Self {
            messages_per_minute: 30,
            recipients_per_day: 10_000,
            requests_per_10_minutes: 10_000,
            upload_bytes_per_5_minutes: 150 * 1024 * 1024,
            external_recipients_per_day: None,
            concurrency: 4,
        }
    }
}

/// The outbox's settings.
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    pub limits: PacingLimits,
    /// A message not sent this long after it was queued fails.
    pub max_age: Duration,
    /// How long finished messages' status rows and events are kept.
    pub retention: Duration,
    /// Messages one replica sends at once.
    pub workers: usize,
    /// How long a claim lasts unless renewed.
    pub lease: Duration,
    /// The first retry after a transient failure.
    pub retry_base: Duration,
}

impl OutboxSettings {
    pub(super) fn from_raw(raw: &RawSettings, problems: &mut Problems) -> Option<Self> {
        let mut valid = true;
        for (name, value) in [
            (
                variables::LIMIT_MESSAGES_PER_MINUTE,
                raw.limit_messages_per_minute,
            ),
            (
                variables::LIMIT_RECIPIENTS_PER_DAY,
                raw.limit_recipients_per_day,
            ),
            (
                variables::LIMIT_REQUESTS_PER_10_MINUTES,
                raw.limit_requests_per_10_minutes,
            ),
            (variables::OUTBOX_WORKERS, raw.outbox_workers),
            (variables::OUTBOX_LEASE_SECONDS, raw.outbox_lease_seconds),
        ] {
            if value == 0 {
                problems.error(format!("{name} must be at least 1"));
                valid = false;
            }
        }
        if raw.limit_external_recipients_per_day == Some(0) {
            problems.error(format!(
                "{} must be at least 1, or unset for no limit",
                variables::LIMIT_EXTERNAL_RECIPIENTS_PER_DAY
            ));
            valid = false;
        }
        valid.then(|| Self {
            limits: PacingLimits {
                messages_per_minute: u32::try_from(raw.limit_messages_per_minute)
                    .unwrap_or(u32::MAX),
                recipients_per_day: raw.limit_recipients_per_day,
                requests_per_10_minutes: raw.limit_requests_per_10_minutes,
                upload_bytes_per_5_minutes: raw.limit_upload_bytes_per_5_minutes,
                external_recipients_per_day: raw.limit_external_recipients_per_day,
                concurrency: usize::try_from(raw.mailbox_concurrency.max(1)).unwrap_or(4),
            },
            max_age: Duration::from_secs(raw.outbox_max_age_seconds.max(1)),
            retention: Duration::from_secs(raw.outbox_retention_seconds),
            workers: usize::try_from(raw.outbox_workers).unwrap_or(32),
            lease: Duration::from_secs(raw.outbox_lease_seconds),
            retry_base: Duration::from_secs(raw.outbox_retry_base_seconds.max(1)),
        })
    }
}
