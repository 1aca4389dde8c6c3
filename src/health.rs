//! Whether the service can do its job, told the same way to gRPC health checks and `/readyz`.
//!
//! Ready (`graphmailer.v1.Mailer`, `/readyz`) means: not shutting down, and the store answers.
//! Alive (`""`, `/healthz`) means the process answers; only shutdown ends it, so a database
//! outage makes replicas unready without getting them restarted. A mailbox that needs reauthorization
//! does not make the service unready (the others still send); Status and metrics report it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;

use crate::{grpc, store::Store};

/// The service's readiness.
#[derive(Debug)]
pub struct Health {
    reporter: HealthReporter,
    store_reachable: AtomicBool,
    shutting_down: AtomicBool,
}

impl Health {
    /// Starts not ready; [`Health::set_store_reachable`] makes it ready.
    pub fn new(reporter: HealthReporter) -> Self {
        Self {
            reporter,
            store_reachable: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Whether the service can take calls.
    pub fn is_ready(&self) -> bool {
        self.store_reachable.load(Ordering::SeqCst) && !self.shutting_down.load(Ordering::SeqCst)
    }

    /// Records whether the store answered; health follows.
    pub async fn set_store_reachable(&self, reachable: bool) {
        let before = self.store_reachable.swap(reachable, Ordering::SeqCst);
        if before != reachable {
            if reachable {
                tracing::info!("store reachable: serving");
            } else {
                tracing::error!("store unreachable: reporting NOT_SERVING until it answers again");
            }
        }
        self.publish().await;
    }

    /// Shutdown has begun: NOT_SERVING from now on.
    pub async fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.publish().await;
    }

    async fn publish(&self) {
        let alive = !self.shutting_down.load(Ordering::SeqCst);
        grpc::set_serving(&self.reporter, alive, self.is_ready()).await;
    }

    /// Pings the store every `interval` until `shutdown`.
    pub fn spawn_monitor(
        self: Arc<Self>,
        store: Store,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        crate::periodic::spawn_every(interval, shutdown, move || {
            let (health, store) = (self.clone(), store.clone());
            async move {
                let reachable = tokio::time::timeout(Duration::from_secs(5), store.ping())
                    .await
                    .is_ok_and(|r| r.is_ok());
                if !health.shutting_down.load(Ordering::SeqCst) {
                    health.set_store_reachable(reachable).await;
                }
            }
        })
    }
}
