//! Group commit: QueueMail calls hand their message to one committer task, which writes
//! whatever has gathered since its last commit in one transaction and then answers every
//! caller. Durability then costs one fsync per group, not per message, and a lone caller waits
//! for nothing but its own commit.

use tokio::sync::{mpsc, oneshot};

use std::time::Duration;

use crate::store::{NewQueued, Queued, Store, StoreError};

/// At most this many messages share a transaction.
const MAX_GROUP: usize = 256;

/// How many messages may wait for the committer before callers wait to hand theirs over.
const BACKLOG: usize = 4096;

/// One message waiting for its commit.
struct Pending {
    row: NewQueued,
    answer: oneshot::Sender<Result<Queued, String>>,
}

/// The handle QueueMail calls hand their messages to.
#[derive(Debug, Clone)]
pub struct Committer {
    sender: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("message_id", &self.row.message_id)
            .finish()
    }
}

impl Committer {
    /// Starts the committer task; it ends when every handle is dropped, after committing what
    /// it was given.
    /// Starts the committer; `spacing` is the time between two sends of a mailbox (for the
    /// estimates).
    pub fn start(store: Store, spacing: Duration) -> Self {
        let (sender, receiver) = mpsc::channel(BACKLOG);
        tokio::spawn(run(store, spacing, receiver));
        Self { sender }
    }

    /// Stores `row` durably (with whatever other messages commit with it).
    pub async fn commit(&self, row: NewQueued) -> Result<Queued, StoreError> {
        let (answer, answered) = oneshot::channel();
        self.sender
            .send(Pending { row, answer })
            .await
            .map_err(|_| StoreError::Group("the outbox is shutting down".to_owned()))?;
        answered
            .await
            .map_err(|_| StoreError::Group("the committer stopped".to_owned()))?
            .map_err(StoreError::Group)
    }
}

async fn run(store: Store, spacing: Duration, mut receiver: mpsc::Receiver<Pending>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while receiver.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (rows, answers): (Vec<NewQueued>, Vec<_>) =
            group.drain(..).map(|p| (p.row, p.answer)).unzip();
        match store.queue_messages(&rows, spacing).await {
            Ok(results) => {
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(Ok(result));
                }
            }
            Err(error) => {
                tracing::error!(
                    error = crate::telemetry::redact_addresses(&error.to_string()),
                    messages = rows.len(),
                    "cannot store queued messages"
                );
                let message = error.to_string();
                for answer in answers {
                    let _ = answer.send(Err(message.clone()));
                }
            }
        }
    }
}
