//! Outlook's limit of concurrent requests per mailbox: a send waits for one of the mailbox's
//! places instead of provoking a 429, and after a 429 for the mailbox's concurrency every send
//! of the mailbox waits out its Retry-After.
//!
//! Outlook counts the limit per app and mailbox, across every replica. Within a process a
//! semaphore per mailbox keeps to it; replicas sharing PostgreSQL also take one of the
//! mailbox's slots in the store (`crate::store::leases`), which expire should a holder die.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    domain::Mailbox,
    store::{MailboxSlot, Store},
    transport::SendError,
};

/// A place for one request: the process's permit and, across replicas, the store's slot.
#[derive(Debug)]
pub(crate) struct Place {
    _permit: OwnedSemaphorePermit,
    _slot: Option<MailboxSlot>,
}

/// The store the slots are shared through, and how long a slot outlives a holder that died.
#[derive(Debug)]
struct SharedSlots {
    store: Store,
    lease: Duration,
}

/// Limits in-flight Graph requests per mailbox.
#[derive(Debug)]
pub struct MailboxLimiter {
    permits: usize,
    wait: Duration,
    semaphores: Mutex<HashMap<Mailbox, Arc<Semaphore>>>,
    /// Mailboxes Outlook refused for concurrency, and until when they wait.
    backing_off: Mutex<HashMap<Mailbox, Instant>>,
    shared: Option<SharedSlots>,
}

impl MailboxLimiter {
    pub fn new(permits: usize, wait: Duration) -> Self {
        Self {
            permits,
            wait,
            semaphores: Mutex::new(HashMap::new()),
            backing_off: Mutex::new(HashMap::new()),
            shared: None,
        }
    }

    /// Shares the places with every replica on `store`; a slot whose holder died frees up
    /// after `lease` (longer than any request may take).
    pub fn shared_through(mut self, store: Store, lease: Duration) -> Self {
        self.shared = Some(SharedSlots { store, lease });
        self
    }

    /// Outlook refused a request of `mailbox` for concurrency: its sends wait `delay` before
    /// taking a place.
    pub(crate) fn back_off(&self, mailbox: &Mailbox, delay: Duration) {
        let until = Instant::now() + delay;
        let mut map = self.backing_off.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(mailbox.clone()).or_insert(until);
        *entry = (*entry).max(until);
    }

    async fn wait_out_back_off(&self, mailbox: &Mailbox) {
        let until = {
            let mut map = self.backing_off.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(mailbox) {
                Some(until) if *until > Instant::now() => Some(*until),
                Some(_) => {
                    map.remove(mailbox);
                    None
                }
                None => None,
            }
        };
        if let Some(until) = until {
            tokio::time::sleep_until(until.into()).await;
        }
    }

    /// A place for one request, held until it is dropped.
    pub(crate) async fn acquire(&self, mailbox: &Mailbox) -> Result<Place, SendError> {
        let started = Instant::now();
        self.wait_out_back_off(mailbox).await;
        let semaphore = {
            let mut map = self.semaphores.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(mailbox.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.permits)))
                .clone()
        };
        let busy = || SendError::MailboxBusy {
            mailbox: mailbox.clone(),
            in_flight: self.permits,
            waited: self.wait,
        };
        let permit = match tokio::time::timeout(self.wait, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(busy()),
        };
        let Some(shared) = &self.shared else {
            return Ok(Place {
                _permit: permit,
                _slot: None,
            });
        };
        let left = self.wait.saturating_sub(started.elapsed());
        match shared
            .store
            .take_mailbox_slot(mailbox, self.permits, shared.lease, left)
            .await
        {
            Ok(Some(slot)) => Ok(Place {
                _permit: permit,
                _slot: Some(slot),
            }),
            Ok(None) => Err(busy()),
            Err(error) => {
                // Without the store the other replicas cannot be counted; a 429 that may
                // follow is retried, which beats not sending at all.
                tracing::warn!(
                    mailbox_domain = mailbox.domain(),
                    error = crate::telemetry::redact_addresses(&error.to_string()),
                    "cannot take a shared request slot; sending on the process's own limit"
                );
                Ok(Place {
                    _permit: permit,
                    _slot: None,
                })
            }
        }
    }
}
