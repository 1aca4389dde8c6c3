//! Test support: the real service on port 0, fakes of Microsoft, per-test databases.

#![allow(dead_code)]

pub mod binary;
pub mod browser;
pub mod certs;
pub mod cloud_proxy;
pub mod fake_graph;
pub mod fake_identity;
pub mod postgres;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use graph_mailer::{
    clock::{ManualClock, SharedClock},
    oauth::TokenManager,
    proto::{self, mailer_client::MailerClient},
    retry::Backoff,
    settings::{Settings, raw},
    startup::{Application, Overrides},
    store::Store,
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

use fake_graph::FakeGraph;
use fake_identity::{CLIENT_ID, CLIENT_SECRET, FakeIdentity, TENANT, TokenRegistry};

/// A fixed key for tests that share a database between instances.
pub const TEST_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Logs to the test harness' captured output when RUST_LOG is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Fakes of the identity platform and Graph sharing one token registry.
#[derive(Clone)]
pub struct Microsoft {
    pub identity: FakeIdentity,
    pub graph: FakeGraph,
}

impl Microsoft {
    pub async fn start() -> Self {
        let tokens = TokenRegistry::default();
        let identity = FakeIdentity::start(tokens.clone()).await;
        let graph = FakeGraph::start(tokens).await;
        // Tokens are for this Graph, as each Microsoft cloud issues them for its own.
        identity.set_graph_resource(&graph.base_url);
        Self { identity, graph }
    }

    /// The binary pointed at these fakes with `env` on top (in `dir`, or a fresh data
    /// directory), its redirect URI registered, ready.
    pub async fn service(
        &self,
        dir: Option<&std::path::Path>,
        env: &[(&str, String)],
    ) -> binary::Service {
        let mut all = self.env();
        all.extend(env.iter().cloned());
        let service = match dir {
            Some(dir) => binary::Service::spawn_in(dir, &all),
            None => binary::Service::spawn(&all),
        };
        self.identity.register_redirect_uri(&format!(
            "http://127.0.0.1:{}/oauth2/callback",
            service.http_port
        ));
        service.wait_ready().await;
        service
    }

    /// The settings that point a service at these fakes (names without `GRAPH_MAILER_`).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TENANT_ID", TENANT.to_owned()),
            ("CLIENT_ID", CLIENT_ID.to_owned()),
            ("CLIENT_SECRET", CLIENT_SECRET.to_owned()),
            ("AUTHORITY_URL", self.identity.base_url.clone()),
            ("GRAPH_URL", self.graph.base_url.clone()),
        ]
    }
}

/// A running service.
pub struct TestApp {
    pub grpc: MailerClient<Channel>,
    pub grpc_addr: SocketAddr,
    pub http_base: String,
    pub data_dir: PathBuf,
    pub store: Store,
    pub tokens: Option<Arc<TokenManager>>,
    pub clock: Option<Arc<ManualClock>>,
    _temp: Option<Arc<tempfile::TempDir>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// How to build a [`TestApp`].
#[derive(Default)]
pub struct AppBuilder {
    env: Vec<(String, String)>,
    microsoft: Option<Microsoft>,
    clock: Option<Arc<ManualClock>>,
    data_dir: Option<(PathBuf, Option<Arc<tempfile::TempDir>>)>,
    refresh_backoff: Option<Backoff>,
}

impl AppBuilder {
    /// Sets `GRAPH_MAILER_<name>`.
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env
            .push((format!("GRAPH_MAILER_{name}"), value.into()));
        self
    }
    /// Uses the Graph transport against these fakes.
    pub fn microsoft(mut self, microsoft: &Microsoft) -> Self {
        self.microsoft = Some(microsoft.clone());
        self
    }
    pub fn clock(mut self, clock: Arc<ManualClock>) -> Self {
        self.clock = Some(clock);
        self
    }
    /// Uses this database (several instances may share it).
    pub fn database(self, url: &str) -> Self {
        self.env("DATABASE_URL", url)
            .env("ENCRYPTION_KEY", TEST_KEY)
    }
    /// Uses this data directory (to restart on the same files).
    pub fn data_dir(mut self, dir: &std::path::Path) -> Self {
        self.data_dir = Some((dir.to_path_buf(), None));
        self
    }
    pub fn refresh_backoff(mut self, backoff: Backoff) -> Self {
        self.refresh_backoff = Some(backoff);
        self
    }

    pub async fn start(self) -> TestApp {
        self.try_start().await.unwrap()
    }

    /// Builds and starts, returning a start-up error instead of panicking.
    pub async fn try_start(self) -> anyhow::Result<TestApp> {
        init_logs();
        let (data_dir, temp) = match self.data_dir {
            Some(d) => d,
            None => {
                let temp = Arc::new(tempfile::tempdir().unwrap());
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http_listener.local_addr().unwrap();
        let mut env = vec![
            (
                "GRAPH_MAILER_GRPC_ADDR".to_owned(),
                "127.0.0.1:0".to_owned(),
            ),
            ("GRAPH_MAILER_HTTP_ADDR".to_owned(), http_addr.to_string()),
            (
                "GRAPH_MAILER_DATA_DIR".to_owned(),
                data_dir.display().to_string(),
            ),
            (
                "GRAPH_MAILER_PUBLIC_URL".to_owned(),
                format!("http://127.0.0.1:{}", http_addr.port()),
            ),
            (
                "GRAPH_MAILER_SHUTDOWN_DRAIN_SECONDS".to_owned(),
                "10".to_owned(),
            ),
        ];
        if let Some(ms) = &self.microsoft {
            ms.identity.register_redirect_uri(&format!(
                "http://127.0.0.1:{}/oauth2/callback",
                http_addr.port()
            ));
            env.extend(
                ms.env()
                    .into_iter()
                    .map(|(k, v)| (format!("GRAPH_MAILER_{k}"), v)),
            );
            env.extend([
                (
                    "GRAPH_MAILER_RETRY_BUDGET_SECONDS".to_owned(),
                    "10".to_owned(),
                ),
                (
                    "GRAPH_MAILER_GRAPH_TIMEOUT_SECONDS".to_owned(),
                    "5".to_owned(),
                ),
                // Tests of callers' rights set a callers file; the others run open.
                (
                    "GRAPH_MAILER_ALLOW_UNAUTHENTICATED".to_owned(),
                    "true".to_owned(),
                ),
            ]);
        }
        // Later entries win: the test's own settings override the defaults above.
        env.extend(self.env);
        let mut merged: Vec<(String, String)> = Vec::new();
        for (k, v) in env {
            merged.retain(|(existing, _)| *existing != k);
            merged.push((k, v));
        }
        if merged
            .iter()
            .any(|(k, v)| k == "GRAPH_MAILER_CLIENT_SECRET_FILE" && !v.is_empty())
        {
            merged.retain(|(k, _)| k != "GRAPH_MAILER_CLIENT_SECRET");
        }
        let (raw, _) = raw::load(None, merged).unwrap();
        let settings = Settings::from_raw(raw).unwrap();
        let clock: SharedClock = match &self.clock {
            Some(clock) => clock.clone(),
            None => Arc::new(graph_mailer::clock::SystemClock),
        };
        let overrides = Overrides {
            clock,
            refresh_backoff: self.refresh_backoff.unwrap_or(Backoff {
                base: Duration::from_millis(20),
                cap: Duration::from_millis(100),
                max_attempts: 3,
                budget: None,
            }),
            http_listener: Some(http_listener),
        };
        let application = Application::build_with(settings, overrides).await?;
        let grpc_addr = application.grpc_addr();
        let store = application.store();
        let tokens = application.token_manager();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(application.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let channel = Channel::from_shared(format!("http://{grpc_addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let grpc = MailerClient::new(channel)
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024);
        Ok(TestApp {
            grpc,
            grpc_addr,
            http_base: format!("http://{http_addr}"),
            data_dir,
            store,
            tokens,
            clock: self.clock,
            _temp: temp,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }
}

impl TestApp {
    pub fn builder() -> AppBuilder {
        AppBuilder::default()
    }

    /// The sandbox service with defaults.
    pub async fn sandbox() -> Self {
        Self::builder().start().await
    }

    /// Stops the service gracefully and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }

    /// Asks for shutdown without waiting.
    pub fn begin_stop(&mut self) -> JoinHandle<anyhow::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("already stopped")
    }

    /// A new connection to the service's gRPC port (for health and reflection clients).
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// The refresh engine of a service on the Graph transport.
    pub fn token_manager(&self) -> Arc<TokenManager> {
        self.tokens
            .clone()
            .expect("the Graph transport has a refresh engine")
    }

    /// A second gRPC client on the same service.
    pub fn client(&self) -> MailerClient<Channel> {
        self.grpc.clone()
    }

    /// Calls Connect and plays the browser: opens the link, follows Microsoft's redirect to the
    /// callback, returns the callback page's status and HTML.
    pub async fn connect_mailbox(&self, mailbox: &str) -> (u16, String) {
        browse(&sign_in_link(&mut self.client(), mailbox).await).await
    }

    /// The callback URL Microsoft would redirect to, without following it.
    pub async fn authorize_redirect(&self, mailbox: &str) -> String {
        let link = sign_in_link(&mut self.client(), mailbox).await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let response = client.get(&link).send().await.unwrap();
        response.headers()["location"].to_str().unwrap().to_owned()
    }

    /// The status of one mailbox.
    pub async fn mailbox_status(&self, mailbox: &str) -> proto::MailboxStatus {
        self.client()
            .status(proto::StatusRequest {
                mailbox: mailbox.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .mailboxes
            .remove(0)
    }
}

/// Calls Connect for `mailbox` and returns the sign-in link.
pub async fn sign_in_link(client: &mut MailerClient<Channel>, mailbox: &str) -> String {
    client
        .connect(proto::ConnectRequest {
            mailbox: mailbox.into(),
            force_consent: false,
        })
        .await
        .expect("Connect failed")
        .into_inner()
        .authorization_url
}

/// A browser: follows redirects, returns the final status and body.
pub async fn browse(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// A minimal valid SendMail request.
pub fn simple_message(mailbox: &str) -> proto::SendMailRequest {
    proto::SendMailRequest {
        mailbox: mailbox.into(),
        to: vec![address("bob@example.com", "Bob")],
        subject: "Hello".into(),
        text_body: "Hi Bob".into(),
        ..Default::default()
    }
}

pub fn address(address: &str, name: &str) -> proto::EmailAddress {
    proto::EmailAddress {
        address: address.into(),
        name: name.into(),
    }
}

pub fn attachment(
    filename: &str,
    content_type: &str,
    content: Vec<u8>,
    content_id: &str,
) -> proto::Attachment {
    proto::Attachment {
        filename: filename.into(),
        content_type: content_type.into(),
        content: content.into(),
        content_id: content_id.into(),
    }
}

/// The mailbox every Graph test connects.
pub const MAILBOX: &str = "noreply@contoso.com";

/// A service on the Graph transport with MAILBOX connected.
/// `simple_message` with an idempotency key.
pub fn keyed_message(key: &str) -> proto::SendMailRequest {
    proto::SendMailRequest {
        idempotency_key: key.into(),
        ..simple_message(MAILBOX)
    }
}

/// `size` bytes in a repeating pattern that is not one byte over and over, so that a chunk
/// lost, doubled or moved changes the content.
pub fn patterned_bytes(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i.wrapping_mul(31) % 251) as u8)
        .collect()
}

/// A service whose mailbox granted `Mail.ReadWrite` (drafts and upload sessions), connected.
pub async fn connected_with_drafts(microsoft: &Microsoft) -> TestApp {
    connected_app(
        microsoft,
        TestApp::builder().env("GRAPH_SCOPES", "Mail.Send Mail.ReadWrite"),
    )
    .await
}

pub async fn connected_app(microsoft: &Microsoft, builder: AppBuilder) -> TestApp {
    let app = builder.microsoft(microsoft).start().await;
    let (status, page) = app.connect_mailbox(MAILBOX).await;
    assert_eq!(status, 200, "{page}");
    app
}

pub use fake_graph::attachment_bytes;
