//! The delivery workers of one replica: at every tick (or when woken), for each mailbox with a
//! message due, reserve the mailbox's next slot and claim a message for it in one short
//! transaction, then send it at its slot. A claim is a lease the replica renews while it works;
//! if the replica stops, the lease runs out and the message is picked up again — as UNKNOWN,
//! looked up in Sent Items first, if it had begun to be sent.
//!
//! No transaction is held across a Graph call: the claim (which makes the message SENDING)
//! commits before the send, and the outcome is written after the answer. Claims run ahead of
//! the slots by up to two ticks; the number of requests to Microsoft at once is
//! `GRAPH_MAILER_OUTBOX_WORKERS`, taken at the slot.

use std::{future::Future, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{
    Activity, Parts, cadence::Cadence, committer::Committer, in_work::InWork, outcome,
    stored::StoredMessages,
};
use crate::{
    domain::{Mailbox, OutgoingMessage},
    metrics, retry,
    store::{ClaimedMessage, Finish, Outcome, Reservation, StoreError},
    transport::SendError,
};

/// How often the workers look for due messages when nothing wakes them.
pub const TICK: Duration = Duration::from_millis(200);

/// How an outcome's write is tried again (the store may be briefly unreachable): five
/// attempts over a few seconds, then the lease runs out and the message is looked up.
const OUTCOME_WRITES: retry::Backoff = retry::Backoff {
    base: Duration::from_millis(400),
    cap: Duration::from_secs(4),
    max_attempts: 5,
    budget: None,
};

/// Mailboxes whose messages are claimed at the same time.
const PARALLEL_CLAIMS: usize = 8;

/// Messages claimed and waiting for their slots, per worker: a message is claimed up to two
/// ticks before its slot, and many mailboxes each have one waiting.
const CLAIMED_AHEAD_PER_WORKER: usize = 4;

/// One replica's workers.
#[derive(Debug)]
pub struct Workers {
    parts: Parts,
    activity: Arc<Activity>,
    /// This replica's name on its leases.
    pub(super) holder: String,
    /// Messages claimed and not finished, at most.
    claimed: Arc<Semaphore>,
    /// Requests to Microsoft at once (`GRAPH_MAILER_OUTBOX_WORKERS`), taken at the slot.
    sending: Arc<Semaphore>,
    /// Bytes of messages loaded at once: 32 workers holding 150 MB messages would need
    /// 4.8 GB; with the budget the others wait until memory is given back.
    bytes: Arc<Semaphore>,
    bytes_total: u32,
    /// The actual departures, kept a slot apart.
    cadence: Cadence,
    /// Whether a dispatch stopped for want of claim room (a finish then wakes the workers).
    starved: std::sync::atomic::AtomicBool,
    /// Outcomes are written in groups (one commit for the sends that ended together).
    outcomes: Committer<Finish, ()>,
    /// Messages this replica has claimed (their leases are renewed).
    in_work: InWork,
    stored: StoredMessages,
}

impl Workers {
    pub fn new(parts: Parts, activity: Arc<Activity>) -> Arc<Self> {
        let workers = parts.settings.workers.max(1);
        let claimed = Arc::new(Semaphore::new(workers * CLAIMED_AHEAD_PER_WORKER));
        let sending = Arc::new(Semaphore::new(workers));
        let bytes_total = u32::try_from(parts.max_inflight_bytes).unwrap_or(u32::MAX);
        let bytes = Arc::new(Semaphore::new(bytes_total as usize));
        let cadence = Cadence::new(crate::store::spacing(&parts.settings.limits));
        let stored = StoredMessages::new(parts.store.clone(), parts.max_message_bytes);
        let store = parts.store.clone();
        let outcomes = Committer::start("outcomes", move |finishes: Arc<[Finish]>| {
            let store = store.clone();
            async move {
                store.finish_attempts(&finishes).await?;
                Ok(vec![(); finishes.len()])
            }
        });
        Arc::new(Self {
            parts,
            activity,
            holder: uuid::Uuid::new_v4().to_string(),
            claimed,
            sending,
            bytes,
            bytes_total,
            starved: std::sync::atomic::AtomicBool::new(false),
            cadence,
            in_work: InWork::default(),
            outcomes,
            stored,
        })
    }

    /// Delivers until `shutdown`, then lets sends in flight finish within `drain` and gives
    /// back what was claimed but not begun.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>, drain: Duration) {
        let renewal = tokio::spawn(self.clone().renew_leases());
        tokio::pin!(shutdown);
        loop {
            let woken = self.activity.work.notified();
            tokio::select! {
                () = &mut shutdown => break,
                () = woken => {}
                () = tokio::time::sleep(TICK) => {}
            }
            if let Err(error) = self.dispatch().await {
                tracing::warn!(
                    error = crate::telemetry::redact_addresses(&error.to_string()),
                    "outbox: cannot claim messages"
                );
            }
        }
        let all = u32::try_from(self.parts.settings.workers.max(1) * CLAIMED_AHEAD_PER_WORKER)
            .unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(drain, self.claimed.acquire_many(all)).await;
        if drained.is_err() {
            tracing::warn!("outbox: sends still in flight at the end of the drain time");
        }
        renewal.abort();
        for id in self.in_work.stop() {
            if let Err(error) = self.parts.store.release_claim(&id, &self.holder).await {
                tracing::warn!(
                    message_id = id,
                    error = crate::telemetry::redact_addresses(&error.to_string()),
                    "outbox: cannot give a claimed message back; it is picked up when its \
                     lease runs out"
                );
            }
        }
    }

    /// Claims what is due now, a slot at a time, and starts sending it; several mailboxes at
    /// once, since each claim waits on the store.
    async fn dispatch(self: &Arc<Self>) -> Result<(), StoreError> {
        let free = self.claimed.available_permits();
        if free == 0 {
            self.starved
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        let now = self.parts.clock.now();
        let horizon = now + chrono::Duration::from_std(TICK * 2).unwrap_or_default();
        let limit = u32::try_from(free.saturating_mul(2).min(500)).unwrap_or(500);
        let mailboxes = self
            .parts
            .store
            .ready_mailboxes(now, horizon, limit)
            .await?;
        let mut claims = tokio::task::JoinSet::new();
        for mailbox in mailboxes {
            if self.claimed.available_permits() == 0 {
                self.starved
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                break;
            }
            while claims.len() >= PARALLEL_CLAIMS {
                log_claim_error(claims.join_next().await);
            }
            let this = self.clone();
            claims.spawn(async move { this.fill(mailbox, horizon).await });
        }
        while let Some(joined) = claims.join_next().await {
            log_claim_error(Some(joined));
        }
        Ok(())
    }

    /// Claims the mailbox's messages whose slots come before `horizon`, while workers are free.
    async fn fill(
        self: Arc<Self>,
        mailbox: Mailbox,
        horizon: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        loop {
            let Ok(permit) = self.claimed.clone().try_acquire_owned() else {
                self.starved
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                return Ok(());
            };
            let reservation = self
                .parts
                .store
                .reserve_and_claim(
                    &mailbox,
                    &self.parts.settings.limits,
                    &self.holder,
                    self.lease_until(),
                    self.parts.clock.now(),
                    horizon,
                )
                .await?;
            match reservation {
                Reservation::Claimed { message, slot } => {
                    self.in_work.claimed(&message.message_id);
                    let this = self.clone();
                    tokio::spawn(async move { this.deliver(message, slot, permit).await });
                }
                Reservation::NotBefore(_) | Reservation::Empty => return Ok(()),
            }
        }
    }

    /// Sends one claimed message at its slot and records what happened.
    async fn deliver(
        self: Arc<Self>,
        message: ClaimedMessage,
        slot: DateTime<Utc>,
        permit: OwnedSemaphorePermit,
    ) {
        let id = message.message_id.clone();
        if let Err(error) = self.attempt(&message, slot).await {
            tracing::error!(
                message_id = id,
                error = crate::telemetry::redact_addresses(&error.to_string()),
                "outbox: cannot record a delivery; the message's lease will run out and it \
                 will be looked up"
            );
        }
        self.in_work.finished(&id);
        drop(permit);
        if self
            .starved
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            self.activity.work.notify_waiters();
        }
    }

    /// Reads the message (claimed SENDING) before its slot, so that at the slot nothing stands
    /// between the clock and the request: the sends keep their spacing.
    async fn attempt(
        &self,
        message: &ClaimedMessage,
        slot: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let store = &self.parts.store;
        let id = message.message_id.as_str();
        // A message larger than the budget (a lowered setting) takes all of it.
        let size = u32::try_from(message.size_bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, self.bytes_total.max(1));
        // Closed only with the workers, which are still running.
        let _memory = self.bytes.acquire_many(size).await;
        let request = match self.load(message).await {
            Ok(request) => request,
            Err(reason) => {
                let outcome = Outcome::Failed {
                    error: format!("the stored message cannot be read: {reason}"),
                };
                return self.record(message, &outcome, None).await;
            }
        };
        metrics::outbox_transition("sending");
        self.activity.events.notify_waiters();
        let wait = (slot - self.parts.clock.now()).to_std().unwrap_or_default();
        if !wait.is_zero() {
            metrics::outbox_pacing_delay(wait.as_secs_f64());
            tokio::time::sleep(wait).await;
        }
        // Closed only with the workers, which are still running.
        let _sending = self.sending.acquire().await;
        if !self.in_work.begin(id) {
            // Stopping: the message is given back to the queue, unsent.
            return Ok(());
        }
        let departure = self.cadence.book(
            message.mailbox.as_str(),
            tokio::time::Instant::now().into_std(),
        );
        tokio::time::sleep_until(departure.into()).await;
        let result = self
            .parts
            .post_office
            .deliver_queued(&message.mailbox, &request, id)
            .await;
        let now = self.parts.clock.now();
        let decision = outcome::decide(
            result.as_ref().map(|at| *at),
            message.attempts + 1,
            message.accepted_at,
            now,
            &self.parts.settings,
        );
        if let Some((until, reason)) = &decision.pause {
            store.pause_queue(&message.mailbox, *until, reason).await?;
        }
        let request_id = result.as_ref().err().and_then(request_id);
        self.record(message, &decision.outcome, request_id.as_deref())
            .await
    }

    /// Writes the outcome (retrying the write, which must not be lost) and wakes watchers.
    async fn record(
        &self,
        message: &ClaimedMessage,
        outcome: &Outcome,
        request_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let finish = Finish {
            message_id: message.message_id.clone(),
            holder: self.holder.clone(),
            outcome: outcome.clone(),
            graph_request_id: request_id.map(str::to_owned),
            at: self.parts.clock.now(),
        };
        retry::retry(
            &OUTCOME_WRITES,
            std::time::Instant::now(),
            || self.outcomes.commit(finish.clone()),
            |_| retry::Decision::Retry { retry_after: None },
            |_, _, _| {},
        )
        .await
        .map_err(|gave_up| gave_up.error)?;
        metrics::outbox_transition(outcome_label(outcome));
        // Watchers look; workers are woken by `deliver` only if they wait for room (a finish
        // makes nothing new due).
        self.activity.events.notify_waiters();
        Ok(())
    }

    /// The message as it was queued (see [`StoredMessages`]).
    pub(super) async fn load(&self, message: &ClaimedMessage) -> Result<OutgoingMessage, String> {
        self.stored.load(message).await
    }

    fn lease_until(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::from_std(self.parts.settings.lease).unwrap_or_default()
    }

    /// Renews the leases of the messages in work, every third of a lease.
    async fn renew_leases(self: Arc<Self>) {
        let every = self.parts.settings.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let ids = self.in_work.ids();
            if ids.is_empty() {
                continue;
            }
            if let Err(error) = self
                .parts
                .store
                .renew_leases(&self.holder, &ids, self.lease_until())
                .await
            {
                tracing::warn!(
                    error = crate::telemetry::redact_addresses(&error.to_string()),
                    "outbox: cannot renew leases"
                );
            }
        }
    }
}

fn log_claim_error(joined: Option<Result<Result<(), StoreError>, tokio::task::JoinError>>) {
    match joined {
        Some(Ok(Err(error))) => tracing::warn!(
            error = crate::telemetry::redact_addresses(&error.to_string()),
            "outbox: cannot claim messages"
        ),
        Some(Err(error)) => tracing::error!(%error, "outbox: a claim task failed"),
        _ => {}
    }
}

/// Microsoft's request id of a failed answer, when the error kept it.
fn request_id(error: &SendError) -> Option<String> {
    match error {
        SendError::Unexpected { ids, .. } | SendError::Forbidden { ids, .. } => {
            ids.request_id.clone()
        }
        _ => None,
    }
}

/// The metric label of an outcome.
pub(super) fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Sent { .. } => "sent",
        Outcome::Failed { .. } => "failed",
        Outcome::Retry { .. } => "queued",
        Outcome::Unknown { .. } => "unknown",
    }
}
