//! Outlook's limit of concurrent requests per mailbox: a send waits for one of the mailbox's
//! places instead of provoking a 429.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{domain::Mailbox, transport::SendError};

/// Limits in-flight Graph requests per mailbox.
#[derive(Debug)]
pub(crate) struct MailboxLimiter {
    permits: usize,
    wait: Duration,
    semaphores: Mutex<HashMap<Mailbox, Arc<Semaphore>>>,
}

impl MailboxLimiter {
    pub(crate) fn new(permits: usize, wait: Duration) -> Self {
        Self {
            permits,
            wait,
            semaphores: Mutex::new(HashMap::new()),
        }
    }

    /// A place for one request, held until the permit is dropped.
    pub(crate) async fn acquire(
        &self,
        mailbox: &Mailbox,
    ) -> Result<OwnedSemaphorePermit, SendError> {
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
