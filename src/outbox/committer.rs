//! Group commit: callers hand their item to one committer task, which writes whatever has
//! gathered since its last commit in one transaction and then answers every caller.
//! Durability then costs one fsync per group, not per item, and a lone caller waits for
//! nothing but its own commit. QueueMail's messages go through one committer, the workers'
//! outcomes through another.

use std::{future::Future, sync::Arc};

use tokio::sync::{mpsc, oneshot};

use crate::store::StoreError;

/// At most this many items share a transaction.
const MAX_GROUP: usize = 256;

/// How many items may wait for the committer before callers wait to hand theirs over.
const BACKLOG: usize = 4096;

/// One item waiting for its commit.
struct Pending<T, R> {
    item: T,
    answer: oneshot::Sender<Result<R, String>>,
}

/// The handle callers hand their items to; `R` is what each item's commit answers.
pub struct Committer<T, R> {
    sender: mpsc::Sender<Pending<T, R>>,
}

impl<T, R> Clone for Committer<T, R> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
        }
    }
}

impl<T, R> std::fmt::Debug for Committer<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").finish_non_exhaustive()
    }
}

impl<T: Send + 'static, R: Send + 'static> Committer<T, R> {
    /// Starts the committer task, which writes each group with `write` (one answer per item,
    /// in order); it ends when every handle is dropped, after committing what it was given.
    pub fn start<W, F>(what: &'static str, write: W) -> Self
    where
        W: Fn(Arc<[T]>) -> F + Send + 'static,
        F: Future<Output = Result<Vec<R>, StoreError>> + Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(BACKLOG);
        tokio::spawn(run(what, write, receiver));
        Self { sender }
    }

    /// Commits `item` durably (with whatever other items commit with it).
    pub async fn commit(&self, item: T) -> Result<R, StoreError> {
        let (answer, answered) = oneshot::channel();
        self.sender
            .send(Pending { item, answer })
            .await
            .map_err(|_| StoreError::Group("the outbox is shutting down".to_owned()))?;
        answered
            .await
            .map_err(|_| StoreError::Group("the committer stopped".to_owned()))?
            .map_err(StoreError::Group)
    }
}

async fn run<T, R, W, F>(what: &'static str, write: W, mut receiver: mpsc::Receiver<Pending<T, R>>)
where
    W: Fn(Arc<[T]>) -> F,
    F: Future<Output = Result<Vec<R>, StoreError>>,
{
    let mut group = Vec::with_capacity(MAX_GROUP);
    while receiver.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (items, answers): (Vec<T>, Vec<_>) =
            group.drain(..).map(|p| (p.item, p.answer)).unzip();
        let count = items.len();
        match write(items.into()).await {
            Ok(results) => {
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(Ok(result));
                }
            }
            Err(error) => {
                tracing::error!(
                    error = crate::telemetry::redact_addresses(&error.to_string()),
                    items = count,
                    "outbox: cannot commit {what}"
                );
                let message = error.to_string();
                for answer in answers {
                    let _ = answer.send(Err(message.clone()));
                }
            }
        }
    }
}
