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

/// Why a watched file is being looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchReason {
    /// The polling interval passed.
    Tick,
    /// SIGHUP: an operator asked for a reload.
    Hangup,
}

/// Calls `reload` every `interval` and on every SIGHUP until `stop` is cancelled: the loop of
/// every file graph-mailer re-reads without a restart (client secret, callers, TLS certificate).
/// Polling survives Kubernetes' atomic symlink swaps of mounted Secrets, where file watches
/// lose track.
pub fn spawn_file_watcher(
    interval: Duration,
    stop: CancellationToken,
    mut reload: impl FnMut(WatchReason) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut hangup = hangup::signal();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once; the file was just read.
        ticker.tick().await;
        loop {
            let reason = tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => WatchReason::Tick,
                _ = hangup::recv(&mut hangup) => WatchReason::Hangup,
            };
            reload(reason);
        }
    })
}

#[cfg(unix)]
mod hangup {
    pub(super) type Hangup = Option<tokio::signal::unix::Signal>;

    pub(super) fn signal() -> Hangup {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }

    pub(super) async fn recv(hangup: &mut Hangup) {
        match hangup {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    }
}

#[cfg(not(unix))]
mod hangup {
    pub(super) type Hangup = ();

    pub(super) fn signal() -> Hangup {}

    pub(super) async fn recv(_: &mut Hangup) {
        std::future::pending().await
    }
}
