//! Building and running the service.
//!
//! [`Application::build`] opens the store, wires the transport and binds both listeners, so a
//! test can ask for port 0 and read the real ports before anything serves.
//! [`Application::run_until_stopped`] serves until the shutdown future completes, then turns
//! health NOT_SERVING, stops accepting calls, lets in-flight ones finish within the drain
//! timeout, and stops the background tasks.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    clock::{SharedClock, SystemClock},
    graph::{GraphClient, GraphTransport},
    grpc,
    health::Health,
    http::{self, HttpState},
    metrics,
    oauth::{
        ClientSecretProvider, ConnectFlow, IdentityClient, REFRESH_BACKOFF, SecretExpiry,
        TokenManager,
    },
    periodic::spawn_every,
    postoffice::PostOffice,
    retry::Backoff,
    settings::{AzureSettings, Settings, names},
    store::{KeyOrigin, Store, TokenCipher},
    transport::{SandboxTransport, SharedTransport},
    upkeep::Upkeep,
};

/// How often expired keys and links are purged and state gauges published.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How often buffered send counters are written to the store.
const COUNTER_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// What tests may replace.
#[derive(Debug)]
pub struct Overrides {
    pub clock: SharedClock,
    /// How token refreshes are retried.
    pub refresh_backoff: Backoff,
    /// A listener bound in advance (so the public URL can name its port before the build).
    pub http_listener: Option<TcpListener>,
}

impl Default for Overrides {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            refresh_backoff: REFRESH_BACKOFF,
            http_listener: None,
        }
    }
}

/// A built, not yet running, service.
pub struct Application {
    settings: Settings,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    grpc_routes: tonic::service::Routes,
    http_router: axum::Router,
    health: Arc<Health>,
    store: Store,
    post_office: Arc<PostOffice>,
    upkeep: Arc<Upkeep>,
    tokens: Option<Arc<TokenManager>>,
    secret: Option<Arc<ClientSecretProvider>>,
}

/// The Microsoft side, when the transport is Graph.
pub(crate) struct Microsoft {
    pub(crate) tokens: Arc<TokenManager>,
    pub(crate) connect: Arc<ConnectFlow>,
    pub(crate) secret: Arc<ClientSecretProvider>,
    pub(crate) transport: SharedTransport,
}

impl Application {
    /// Builds with the real clock.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, Overrides::default()).await
    }

    /// Builds with test overrides.
    pub async fn build_with(settings: Settings, overrides: Overrides) -> anyhow::Result<Self> {
        let clock = overrides.clock.clone();
        for warning in &settings.warnings {
            tracing::warn!("{warning}");
        }
        let store = open_store(&settings).await?;
        let secret_expiry = SecretExpiry {
            expires_at: settings
                .azure
                .as_ref()
                .and_then(|a| a.client_secret_expires_at),
            warning: settings
                .azure
                .as_ref()
                .map(|a| a.client_secret_warning)
                .unwrap_or_else(|| chrono::Duration::days(30)),
        };
        let metrics = metrics::install();
        if let Some(at) = secret_expiry.expires_at {
            metrics::client_secret_expiry(at.timestamp());
        }
        let (transport, tokens, connect, secret) = match &settings.azure {
            Some(azure) => {
                let m =
                    wire_microsoft(&settings, azure, &store, &clock, overrides.refresh_backoff)?;
                (m.transport, Some(m.tokens), Some(m.connect), Some(m.secret))
            }
            None => {
                tracing::warn!(
                    "SANDBOX MODE: no Microsoft tenant is configured, so mail is NOT delivered; \
                     every message is written as an .eml file under {}",
                    settings.data_dir.join("sandbox").display()
                );
                let sandbox: SharedTransport =
                    Arc::new(SandboxTransport::new(&settings.data_dir, clock.clone()));
                (sandbox, None, None, None)
            }
        };
        let post_office = Arc::new(PostOffice::new(
            store.clone(),
            clock.clone(),
            transport,
            connect.clone(),
            secret_expiry,
        ));
        let upkeep = Arc::new(Upkeep::new(store.clone(), clock.clone(), secret_expiry));
        let (grpc_routes, reporter) = grpc::routes(post_office.clone(), settings.max_message_bytes)
            .context("building the gRPC services")?;
        let health = Arc::new(Health::new(reporter));
        let http_router = http::router(HttpState {
            connect,
            health: health.clone(),
            metrics,
        });
        let grpc_listener = TcpListener::bind(settings.grpc_addr)
            .await
            .with_context(|| {
                format!(
                    "cannot listen for gRPC on {} ({})",
                    settings.grpc_addr,
                    names::GRPC_ADDR
                )
            })?;
        let http_listener = match overrides.http_listener {
            Some(listener) => listener,
            None => TcpListener::bind(settings.http_addr)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen for HTTP on {} ({})",
                        settings.http_addr,
                        names::HTTP_ADDR
                    )
                })?,
        };
        Ok(Self {
            settings,
            grpc_listener,
            http_listener,
            grpc_routes,
            http_router,
            health,
            store,
            post_office,
            upkeep,
            tokens,
            secret,
        })
    }

    /// The bound gRPC address (the real port when 0 was asked for).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener
            .local_addr()
            .unwrap_or(self.settings.grpc_addr)
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener
            .local_addr()
            .unwrap_or(self.settings.http_addr)
    }

    /// The refresh engine, when the transport is Graph.
    pub fn token_manager(&self) -> Option<Arc<TokenManager>> {
        self.tokens.clone()
    }

    /// The store.
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Serves until `shutdown` completes, then drains and stops.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let Self {
            settings,
            grpc_listener,
            http_listener,
            grpc_routes,
            http_router,
            health,
            store,
            post_office,
            upkeep,
            tokens,
            secret,
        } = self;
        let stop = CancellationToken::new();
        health.set_store_reachable(true).await;
        let mut background = vec![
            health
                .clone()
                .spawn_monitor(store.clone(), settings.health_interval, stop.clone()),
            spawn_every(UPKEEP_INTERVAL, stop.clone(), move || {
                let upkeep = upkeep.clone();
                async move { upkeep.run_once().await }
            }),
            spawn_every(COUNTER_FLUSH_INTERVAL, stop.clone(), {
                let post_office = post_office.clone();
                move || {
                    let post_office = post_office.clone();
                    async move { post_office.flush_counters().await }
                }
            }),
        ];
        background.extend(tokens.map(|tokens| tokens.spawn_upkeep(stop.clone())));
        if let (Some(secret), Some(azure)) = (secret, &settings.azure) {
            background.extend(secret.spawn_watcher(azure.secret_reload_interval, stop.clone()));
        }
        let grpc_addr = grpc_listener.local_addr()?;
        let http_addr = http_listener.local_addr()?;
        let grpc = spawn_grpc(grpc_listener, grpc_routes, stop.clone());
        let http = spawn_http(http_listener, http_router, stop.clone());
        tracing::info!(
            %grpc_addr,
            %http_addr,
            transport = post_office.transport_name(),
            version = crate::VERSION,
            "graph-mailer serving"
        );
        shutdown.await;
        // Health first, so load balancers stop sending before the listeners close.
        health.begin_shutdown().await;
        stop.cancel();
        drain(grpc, http, settings.shutdown_drain).await?;
        for task in background {
            task.abort();
        }
        post_office.flush_counters().await;
        store.close().await;
        tracing::info!("graph-mailer stopped");
        Ok(())
    }
}

fn spawn_grpc(
    listener: TcpListener,
    routes: tonic::service::Routes,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
    tokio::spawn(
        tonic::transport::Server::builder()
            // A span per RPC, at debug level: the info-level line of each call comes from the
            // core, and a span per call would cost as much again on the hot path.
            .trace_fn(|request| tracing::debug_span!("rpc", path = %request.uri().path()))
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                // Small gRPC answers must not wait for delayed ACKs (Nagle).
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move { stop.cancelled().await },
            ),
    )
}

fn spawn_http(
    listener: TcpListener,
    router: axum::Router,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    })
}

/// Waits for both servers to finish their in-flight calls, at most `timeout`.
async fn drain(
    grpc: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    timeout: Duration,
) -> anyhow::Result<()> {
    match tokio::time::timeout(timeout, async { (grpc.await, http.await) }).await {
        Ok((grpc, http)) => {
            grpc.context("gRPC server task")?.context("gRPC server")?;
            http.context("HTTP server task")?.context("HTTP server")?;
            tracing::info!("in-flight calls finished");
        }
        Err(_) => tracing::warn!(
            seconds = timeout.as_secs(),
            "drain timeout: stopping with calls still in flight"
        ),
    }
    Ok(())
}

async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let (cipher, origin) = TokenCipher::load(&settings.encryption_key)?;
    match origin {
        KeyOrigin::GeneratedFile(path) => tracing::warn!(
            path,
            "generated a new encryption key for stored tokens; keep it (and back it up): without it \
             the stored connections cannot be read. Set {}(_FILE) to share it between replicas",
            names::ENCRYPTION_KEY
        ),
        KeyOrigin::ExistingFile(path) => tracing::info!(path, "encryption key loaded"),
        KeyOrigin::Configured => {}
    }
    let store = Store::open(&settings.database_url, cipher)
        .await
        .with_context(|| {
            format!(
                "cannot open the store at {}",
                settings.database_url.redacted()
            )
        })?;
    tracing::info!(backend = ?store.backend(), "store open, migrations current");
    Ok(store)
}

pub(crate) fn wire_microsoft(
    settings: &Settings,
    azure: &AzureSettings,
    store: &Store,
    clock: &SharedClock,
    refresh_backoff: Backoff,
) -> anyhow::Result<Microsoft> {
    let secret =
        Arc::new(ClientSecretProvider::load(&azure.client_secret).map_err(anyhow::Error::msg)?);
    let identity = Arc::new(IdentityClient::new(
        IdentityClient::http_client().context("building the identity platform's HTTP client")?,
        settings.authority_url.clone(),
        azure,
        settings.public_url.redirect_uri(),
        secret.clone(),
    ));
    let tokens = Arc::new(TokenManager::new(
        store.clone(),
        identity.clone(),
        clock.clone(),
        settings.tokens.clone(),
        refresh_backoff,
    ));
    let connect = Arc::new(ConnectFlow::new(
        identity.clone(),
        store.clone(),
        clock.clone(),
    ));
    let graph = GraphClient::new(
        GraphClient::http_client(
            settings.graph.connect_timeout,
            settings.graph.request_timeout,
        )
        .context("building the Graph HTTP client")?,
        settings.graph_url.clone(),
    )
    .with_context(|| format!("{} cannot be used for Graph's URLs", names::GRAPH_URL))?;
    let transport: SharedTransport = Arc::new(GraphTransport::new(
        graph,
        tokens.clone(),
        clock.clone(),
        &settings.graph,
    ));
    tracing::info!(
        tenant = %azure.tenant,
        redirect_uri = settings.public_url.redirect_uri(),
        scopes = azure.scopes.names().join(" "),
        "Graph transport ready"
    );
    Ok(Microsoft {
        tokens,
        connect,
        secret,
        transport,
    })
}
