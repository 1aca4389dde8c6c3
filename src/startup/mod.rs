//! Building and running the service.
//!
//! [`Application::build`] opens the store, wires the transport, the callers and the servers,
//! and binds every listener, so a test can ask for port 0 and read the real ports before
//! anything serves. [`Application::run_until_stopped`] serves until the shutdown future
//! completes, then turns health NOT_SERVING, stops accepting calls, lets in-flight ones finish
//! within the drain timeout, and stops the background tasks.
//!
//! - [`crate::wiring`]: the store, the Microsoft side, the callers and the audit log.
//! - `listeners`: the listeners and the servers on them, with TLS when configured.

mod listeners;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::wiring::{open_access, open_store, wire_microsoft};

use self::listeners::{Listeners, Servers, Services};
use crate::{
    admin::{self, AdminPage},
    callers::CallerRegistry,
    clock::{SharedClock, SystemClock},
    grpc,
    health::Health,
    http::{self, HttpState},
    metrics,
    oauth::{ClientSecretProvider, REFRESH_BACKOFF, SecretExpiry, TokenManager},
    outbox::{self, Outbox, recovery::Recovery, worker::Workers},
    periodic::spawn_every,
    postoffice::{Parts, PostOffice},
    retry::Backoff,
    settings::Settings,
    store::Store,
    tls::ReloadingTls,
    transport::{SandboxTransport, SharedTransport},
    upkeep::Upkeep,
};

/// How often expired keys and links are purged and state gauges published.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How often buffered send counters are written to the store.
const COUNTER_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How often the outbox looks for stopped replicas' messages and ambiguous answers.
const OUTBOX_RECOVERY_INTERVAL: Duration = Duration::from_secs(1);

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
    listeners: Listeners,
    services: Services,
    tls: Option<Arc<ReloadingTls>>,
    health: Arc<Health>,
    store: Store,
    post_office: Arc<PostOffice>,
    workers: Arc<Workers>,
    recovery: Arc<Recovery>,
    upkeep: Arc<Upkeep>,
    callers: Arc<CallerRegistry>,
    tokens: Option<Arc<TokenManager>>,
    secret: Option<Arc<ClientSecretProvider>>,
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
        let (audit, callers) = open_access(&settings)?;
        let tls = match &settings.tls {
            Some(tls) => Some(Arc::new(
                ReloadingTls::load(tls).map_err(anyhow::Error::msg)?,
            )),
            None => None,
        };
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
        let (transport, tokens, connect, secret, identity) = match &settings.azure {
            Some(azure) => {
                let m = wire_microsoft(
                    &settings,
                    azure,
                    &store,
                    &clock,
                    overrides.refresh_backoff,
                    audit.clone(),
                )?;
                (
                    m.transport,
                    Some(m.tokens),
                    Some(m.connect),
                    Some(m.secret),
                    Some(m.identity),
                )
            }
            None => {
                tracing::warn!(
                    "SANDBOX MODE: no Microsoft tenant is configured, so mail is NOT delivered; \
                     every message is written as an .eml file under {}",
                    settings.data_dir.join("sandbox").display()
                );
                let sandbox: SharedTransport =
                    Arc::new(SandboxTransport::new(&settings.data_dir, clock.clone()));
                (sandbox, None, None, None, None)
            }
        };
        let post_office = Arc::new(PostOffice::new(Parts {
            store: store.clone(),
            clock: clock.clone(),
            transport,
            connect: connect.clone(),
            secret_expiry,
            allowed_mailboxes: settings.access.allowed_mailboxes.clone(),
            audit: audit.clone(),
            scopes: settings.azure.as_ref().map(|azure| azure.scopes.clone()),
        }));
        let outbox_parts = outbox::Parts {
            store: store.clone(),
            clock: clock.clone(),
            post_office: post_office.clone(),
            settings: settings.outbox.clone(),
            max_message_bytes: settings.max_message_bytes,
            max_inflight_bytes: settings.limits.max_inflight_bytes,
        };
        let activity = Arc::new(outbox::Activity::default());
        let outbox = Arc::new(Outbox::new(outbox_parts.clone(), activity.clone()));
        let workers = Workers::new(outbox_parts.clone(), activity.clone());
        let recovery = Arc::new(Recovery::new(
            outbox_parts,
            activity,
            workers.clone(),
            settings.graph.reconcile_window,
        ));
        let upkeep = Arc::new(Upkeep::new(store.clone(), clock.clone(), secret_expiry));
        let admin = settings.admin.enabled.then(|| {
            AdminPage::new(admin::Parts {
                settings: Arc::new(settings.clone()),
                store: store.clone(),
                clock: clock.clone(),
                post_office: post_office.clone(),
                outbox: outbox.clone(),
                callers: callers.clone(),
                identity,
                audit: audit.clone(),
            })
        });
        let grpc = grpc::services(grpc::MailerParts {
            post_office: post_office.clone(),
            outbox,
            callers: callers.clone(),
            audit,
            max_message_bytes: settings.max_message_bytes,
            reflection: settings.access.reflection,
        })
        .context("building the gRPC services")?;
        let health = Arc::new(Health::new(grpc.reporter));
        let services = Services {
            grpc: grpc.routes,
            http: http::router(HttpState {
                connect,
                health: health.clone(),
                metrics: settings.metrics_addr.is_none().then(|| metrics.clone()),
                admin,
            }),
            health: grpc
                .health_routes
                .into_axum_router()
                .merge(http::probes(health.clone())),
            metrics: http::metrics_only(metrics),
        };
        let listeners = Listeners::bind(&settings, overrides.http_listener).await?;
        Ok(Self {
            settings,
            listeners,
            services,
            tls,
            health,
            store,
            post_office,
            workers,
            recovery,
            upkeep,
            callers,
            tokens,
            secret,
        })
    }

    /// The bound gRPC address (the real port when 0 was asked for).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.listeners
            .grpc
            .local_addr()
            .unwrap_or(self.settings.grpc_addr)
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.listeners
            .http
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
            listeners,
            services,
            tls,
            health,
            store,
            post_office,
            workers,
            recovery,
            upkeep,
            callers,
            tokens,
            secret,
        } = self;
        let stop = CancellationToken::new();
        health.set_store_reachable(true).await;
        let reload = settings.file_reload_interval;
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
            spawn_every(OUTBOX_RECOVERY_INTERVAL, stop.clone(), move || {
                let recovery = recovery.clone();
                async move { recovery.run_once().await }
            }),
        ];
        let deliveries =
            tokio::spawn(workers.run(stop.clone().cancelled_owned(), settings.shutdown_drain));
        background.extend(tokens.map(|tokens| tokens.spawn_upkeep(stop.clone())));
        if let (Some(secret), Some(azure)) = (secret, &settings.azure) {
            background.extend(secret.spawn_watcher(azure.secret_reload_interval, stop.clone()));
        }
        background.extend(callers.spawn_watcher(reload, stop.clone()));
        background.extend(
            tls.clone()
                .map(|tls| tls.spawn_watcher(reload, stop.clone())),
        );
        let grpc_addr = listeners.grpc.local_addr()?;
        let http_addr = listeners.http.local_addr()?;
        let servers = Servers::start(listeners, services, tls.clone(), settings.limits, &stop);
        tracing::info!(
            %grpc_addr,
            %http_addr,
            tls = tls.is_some(),
            transport = post_office.transport_name(),
            version = crate::VERSION,
            "graph-mailer serving"
        );
        shutdown.await;
        // Health first, so load balancers stop sending before the listeners close.
        health.begin_shutdown().await;
        stop.cancel();
        servers.drain(settings.shutdown_drain).await?;
        // The workers stopped claiming at `stop`; their sends in flight finish within the
        // drain time, and what they claimed but had not begun goes back to the queue.
        if let Err(error) = deliveries.await {
            tracing::error!(%error, "the outbox's workers failed");
        }
        for task in background {
            task.abort();
        }
        post_office.flush_counters().await;
        store.close().await;
        tracing::info!("graph-mailer stopped");
        Ok(())
    }
}
