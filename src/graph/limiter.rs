//! Outlook's limit of concurrent requests per mailbox: a send waits for one of the mailbox's
//! places instead of provoking a 429, and after a 429 for the mailbox's concurrency every send
//! of the mailbox waits out its Retry-After.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{domain::Mailbox, transport::SendError};

/// Limits in-flight Graph requests per mailbox.
#[derive(Debug)]
pub struct MailboxLimiter {
    permits: usize,
    wait: Duration,
    semaphores: Mutex<HashMap<Mailbox, Arc<Semaphore>>>,
    /// Mailboxes Outlook refused for concurrency, and until when they wait.
    backing_off: Mutex<HashMap<Mailbox, Instant>>,
}

impl MailboxLimiter {
    pub fn new(permits: usize, wait: Duration) -> Self {
        Self {
            permits,
            wait,
            semaphores: Mutex::new(HashMap::new()),
            backing_off: Mutex::new(HashMap::new()),
        }
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

    /// A place for one request, held until the permit is dropped.
    pub(crate) async fn acquire(
        &self,
        mailbox: &Mailbox,
    ) -> Result<OwnedSemaphorePermit, SendError> {
        self.wait_out_back_off(mailbox).await;
        let semaphore = {
            let mut map = self.semaphores.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(mailbox.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.permits)))
                .clone()
        };
        match tokio::time::timeout(self.wait, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(SendError::MailboxBusy {
                mailbox: mailbox.clone(),
                in_flight: self.permits,
                waited: self.wait,
            }),
        }
    }
}
