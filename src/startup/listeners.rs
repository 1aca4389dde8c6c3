//! The service's listeners, bound before anything serves (so tests can ask for port 0), and
//! the servers on them:
//!
//! - gRPC (`GRAPH_MAILER_GRPC_ADDR`): Mailer, health, reflection; TLS when configured.
//! - HTTP (`GRAPH_MAILER_HTTP_ADDR`): the OAuth callback, `/healthz`, `/readyz`, and `/metrics`
//!   unless it has a listener of its own; TLS when configured.
//! - health (`GRAPH_MAILER_HEALTH_ADDR`, on by default with TLS): gRPC health, `/healthz` and
//!   `/readyz` in plaintext, for probes that cannot speak TLS. It says nothing but "serving".
//! - metrics (`GRAPH_MAILER_METRICS_ADDR`): `/metrics` alone, plaintext.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use futures::StreamExt as _;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::{
    grpc,
    settings::{LimitSettings, Settings},
    tls::{self, AxumTlsListener, ReloadingTls},
    variables,
};

/// The bound listeners.
pub(crate) struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
    pub health: Option<TcpListener>,
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds every configured listener; `http` may be bound by the caller already.
    pub async fn bind(settings: &Settings, http: Option<TcpListener>) -> anyhow::Result<Self> {
        let http = match http {
            Some(listener) => listener,
            None => bind(settings.http_addr, variables::HTTP_ADDR).await?,
        };
        let health = match settings.health_addr {
            Some(addr) => Some(bind(addr, variables::HEALTH_ADDR).await?),
            None => None,
        };
        let metrics = match settings.metrics_addr {
            Some(addr) => Some(bind(addr, variables::METRICS_ADDR).await?),
            None => None,
        };
        Ok(Self {
            grpc: bind(settings.grpc_addr, variables::GRPC_ADDR).await?,
            http,
            health,
            metrics,
        })
    }
}

async fn bind(addr: SocketAddr, variable: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({variable})"))
}

/// What the servers serve.
pub(crate) struct Services {
    pub grpc: tonic::service::Routes,
    pub http: axum::Router,
    pub health: axum::Router,
    pub metrics: axum::Router,
}

/// The running servers.
pub(crate) struct Servers {
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
}

impl Servers {
    /// Starts a server on each listener.
    pub fn start(
        listeners: Listeners,
        services: Services,
        tls: Option<Arc<ReloadingTls>>,
        limits: LimitSettings,
        stop: &CancellationToken,
    ) -> Self {
        let mut tasks = vec![
            (
                "gRPC",
                serve_grpc(listeners.grpc, services.grpc, tls.clone(), limits, stop),
            ),
            ("HTTP", serve_http(listeners.http, services.http, tls, stop)),
        ];
        if let Some(listener) = listeners.health {
            tasks.push(("health", serve_http(listener, services.health, None, stop)));
        }
        if let Some(listener) = listeners.metrics {
            tasks.push((
                "metrics",
                serve_http(listener, services.metrics, None, stop),
            ));
        }
        Self { tasks }
    }

    /// Waits for every server to finish its in-flight calls, at most `timeout`.
    pub async fn drain(self, timeout: Duration) -> anyhow::Result<()> {
        let finished = tokio::time::timeout(timeout, async {
            let mut results = Vec::new();
            for (name, task) in self.tasks {
                results.push((name, task.await));
            }
            results
        })
        .await;
        match finished {
            Ok(results) => {
                for (name, result) in results {
                    result
                        .with_context(|| format!("{name} server task"))?
                        .with_context(|| format!("{name} server"))?;
                }
                tracing::info!("in-flight calls finished");
            }
            Err(_) => tracing::warn!(
                seconds = timeout.as_secs(),
                "drain timeout: stopping with calls still in flight"
            ),
        }
        Ok(())
    }
}

fn serve_grpc(
    listener: TcpListener,
    routes: tonic::service::Routes,
    tls: Option<Arc<ReloadingTls>>,
    limits: LimitSettings,
    stop: &CancellationToken,
) -> JoinHandle<anyhow::Result<()>> {
    let stop = stop.clone();
    tokio::spawn(async move {
        let stopped = {
            let stop = stop.clone();
            async move { stop.cancelled().await }
        };
        match tls {
            Some(tls) => {
                let connections = tls.accept(listener, tls::Listener::Grpc, stop);
                let incoming =
                    ReceiverStream::new(connections).map(Ok::<_, std::convert::Infallible>);
                grpc::serve(routes, incoming, limits, stopped).await?;
            }
            None => {
                // Small gRPC answers must not wait for delayed ACKs (Nagle).
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                grpc::serve(routes, incoming, limits, stopped).await?;
            }
        }
        Ok(())
    })
}

fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<ReloadingTls>>,
    stop: &CancellationToken,
) -> JoinHandle<anyhow::Result<()>> {
    let stop = stop.clone();
    tokio::spawn(async move {
        let stopped = {
            let stop = stop.clone();
            async move { stop.cancelled().await }
        };
        match tls {
            Some(tls) => {
                let local_addr = listener.local_addr()?;
                let connections = tls.accept(listener, tls::Listener::Http, stop);
                let listener = AxumTlsListener {
                    connections,
                    local_addr,
                };
                axum::serve(listener, router)
                    .with_graceful_shutdown(stopped)
                    .await?;
            }
            None => {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stopped)
                    .await?;
            }
        }
        Ok(())
    })
}
