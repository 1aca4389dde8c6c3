//! Background work on a timer: every background task (readiness pings, token upkeep, counter
//! flushes, maintenance) is "run this every so often until shutdown".

use std::{future::Future, time::Duration};

use tokio_util::sync::CancellationToken;

/// Runs `work` now and then every `interval` (a slow run delays the next rather than piling
/// runs up) until `stop` is cancelled. A run in progress at shutdown is not interrupted here;
/// the caller aborts the task after draining.
pub fn spawn_every<F, Fut>(
    interval: Duration,
    stop: CancellationToken,
    mut work: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => work().await,
            }
        }
    })
}
