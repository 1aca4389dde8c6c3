//! The outbox: QueueMail and SendBulk take a message, store it durably and answer at once; the
//! service delivers it as fast as the mailbox's limits allow, survives crashes, and tells what
//! became of every message.
//!
//! - [`committer`]: group commit: concurrent QueueMail calls share one transaction, and so
//!   do the outcomes the workers record.
//! - [`bulk`]: SendBulk's templates.
//! - [`worker`]: claims due messages slot by slot (pacing shared by replicas through the
//!   store) and sends them; `outcome` decides what each answer means; `cadence` keeps the
//!   actual departures a slot apart; `in_work` what a replica has claimed and begun;
//!   `stored` reads a claimed message back as its request.
//! - [`recovery`]: messages whose replica stopped, ambiguous answers looked up in Sent Items,
//!   messages too old, retention.
//! - [`watch`]: WatchMessages' event stream.
//! - `api`: QueueMail and SendBulk; `status`: the reads and cancels; both with the caller's
//!   rights.

mod api;
pub mod bulk;
mod cadence;
mod committer;
mod in_work;
mod outcome;
pub mod recovery;
mod status;
mod stored;
mod watch;
pub mod worker;

use std::sync::Arc;

use tokio::sync::Notify;

pub use api::{BatchView, BulkReceipt, QueueReceipt};

use crate::{clock::SharedClock, postoffice::PostOffice, settings::OutboxSettings, store::Store};

/// What the outbox is made of.
#[derive(Debug, Clone)]
pub struct Parts {
    pub store: Store,
    pub clock: SharedClock,
    pub post_office: Arc<PostOffice>,
    pub settings: OutboxSettings,
    pub max_message_bytes: u64,
    /// The bytes of messages the workers may hold at once (`GRAPH_MAILER_MAX_INFLIGHT_BYTES`,
    /// a budget of its own beside the calls').
    pub max_inflight_bytes: u64,
}

/// Wakes the workers (messages are due) and the watchers (events were written).
#[derive(Debug, Default)]
pub struct Activity {
    pub work: Notify,
    pub events: Notify,
}

impl Activity {
    /// Something changed: workers and watchers look now instead of at their next poll.
    pub fn changed(&self) {
        self.work.notify_waiters();
        self.events.notify_waiters();
    }
}

/// The group committer of QueueMail's messages.
fn queue_committer(
    parts: &Parts,
) -> committer::Committer<crate::store::NewQueued, crate::store::Queued> {
    let store = parts.store.clone();
    let spacing = crate::store::spacing(&parts.settings.limits);
    committer::Committer::start("queued messages", move |rows| {
        let store = store.clone();
        async move { store.queue_messages(&rows, spacing).await }
    })
}

/// The outbox's RPC side.
#[derive(Debug)]
pub struct Outbox {
    parts: Parts,
    committer: committer::Committer<crate::store::NewQueued, crate::store::Queued>,
    activity: Arc<Activity>,
}

impl Outbox {
    /// The outbox over `parts`; its group committer runs until the outbox is dropped.
    pub fn new(parts: Parts, activity: Arc<Activity>) -> Self {
        Self {
            committer: queue_committer(&parts),
            parts,
            activity,
        }
    }
}
