//! The parts a service is wired from: the store, the Microsoft side (identity platform, refresh
//! engine, Connect, Graph transport), the callers and the audit log. `check` wires the same
//! parts to test them.

use std::{sync::Arc, time::Duration};

use anyhow::Context;

use crate::{
    audit::AuditLog,
    callers::CallerRegistry,
    clock::SharedClock,
    graph::{GraphClient, GraphTransport, MailboxLimiter},
    oauth::{ClientSecretProvider, ConnectFlow, IdentityClient, TokenManager},
    retry::Backoff,
    settings::{AzureSettings, Settings},
    store::{Backend, KeyOrigin, Store, TokenCipher},
    transport::SharedTransport,
    variables,
};

/// The Microsoft side, when the transport is Graph.
pub(crate) struct Microsoft {
    pub(crate) identity: Arc<IdentityClient>,
    pub(crate) tokens: Arc<TokenManager>,
    pub(crate) connect: Arc<ConnectFlow>,
    pub(crate) secret: Arc<ClientSecretProvider>,
    pub(crate) transport: SharedTransport,
}

/// Opens the store with the configured (or generated) encryption key.
pub(crate) async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let (cipher, origin) = TokenCipher::load(&settings.encryption_key)?;
    match origin {
        KeyOrigin::GeneratedFile(path) => tracing::warn!(
            path,
            "generated a new encryption key for stored tokens; keep it (and back it up): without it \
             the stored connections cannot be read. Set {}(_FILE) to share it between replicas",
            variables::ENCRYPTION_KEY
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

/// The audit log and the callers in force (open when no callers file is configured).
pub(crate) fn open_access(
    settings: &Settings,
) -> anyhow::Result<(Arc<AuditLog>, Arc<CallerRegistry>)> {
    let audit = Arc::new(
        AuditLog::open(&settings.access.audit_log)
            .with_context(|| format!("cannot open the audit log ({})", variables::AUDIT_LOG))?,
    );
    let callers = match &settings.access.callers_file {
        Some(path) => {
            CallerRegistry::load(path.clone(), audit.clone()).map_err(anyhow::Error::msg)?
        }
        None => {
            tracing::warn!(
                "OPEN: no callers file ({}), so anyone who reaches the gRPC port may call \
                 every RPC as every mailbox",
                variables::CALLERS_FILE
            );
            CallerRegistry::open(audit.clone())
        }
    };
    Ok((audit, Arc::new(callers)))
}

/// The Microsoft side of a Graph service.
pub(crate) fn wire_microsoft(
    settings: &Settings,
    azure: &AzureSettings,
    store: &Store,
    clock: &SharedClock,
    refresh_backoff: Backoff,
    audit: Arc<AuditLog>,
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
    let graph = GraphClient::new(
        GraphClient::http_client(
            settings.graph.connect_timeout,
            settings.graph.request_timeout,
        )
        .context("building the Graph HTTP client")?,
        settings.graph_url.clone(),
    )
    .with_context(|| format!("{} cannot be used for Graph's URLs", variables::GRAPH_URL))?;
    let connect = Arc::new(ConnectFlow::new(
        identity.clone(),
        Arc::new(graph.clone()),
        store.clone(),
        clock.clone(),
        audit,
    ));
    let mut limiter = MailboxLimiter::new(
        settings.graph.mailbox_concurrency,
        settings.graph.concurrency_wait,
    );
    if store.backend() == Backend::Postgres {
        // Replicas share Outlook's per-mailbox limit; a slot of a replica that died frees up
        // once any request it could have been making would have timed out.
        limiter = limiter.shared_through(
            store.clone(),
            settings.graph.request_timeout + Duration::from_secs(10),
        );
    }
    let transport: SharedTransport = Arc::new(GraphTransport::new(
        graph,
        tokens.clone(),
        clock.clone(),
        &settings.graph,
        limiter,
    ));
    tracing::info!(
        tenant = %azure.tenant,
        redirect_uri = settings.public_url.redirect_uri(),
        scopes = azure.scopes.names().join(" "),
        "Graph transport ready"
    );
    Ok(Microsoft {
        identity,
        tokens,
        connect,
        secret,
        transport,
    })
}
