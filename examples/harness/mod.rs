//! What the load harnesses share: the release binary started on the fakes (as its own process,
//! so its CPU time and memory come from /proc), a keyed client, a 2 KB message, and latency
//! statistics.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use graph_mailer::{
    callers::key,
    proto::{self, mailer_client::MailerClient},
};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

use crate::{
    fake_graph::FakeGraph,
    fake_identity::{CLIENT_ID, CLIENT_SECRET, FakeIdentity, TENANT},
};

/// The load generator calls as an admin of a callers file: the per-call authentication is part
/// of what is measured.
pub const KEY: &str = "gm_loadtest-key-000000000000000000000000000000";

#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub type Client = MailerClient<InterceptedService<Channel, Bearer>>;

pub const MAILBOX: &str = "noreply@contoso.com";

pub fn binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/graph-mailer");
    if !path.exists() {
        eprintln!("build the service first: cargo build --release");
        std::process::exit(2);
    }
    path
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Service {
    pub child: Child,
    pub grpc: String,
    _data: tempfile::TempDir,
}

impl Service {
    /// Starts the release binary on the fakes with the Graph scopes for attachments and
    /// connects [`MAILBOX`].
    pub async fn start(identity: &FakeIdentity, graph: &FakeGraph) -> Self {
        Self::start_with(identity, graph, &[], &[MAILBOX]).await
    }

    /// Starts it with more settings (`GRAPH_MAILER_` names in full) and connects `mailboxes`.
    pub async fn start_with(
        identity: &FakeIdentity,
        graph: &FakeGraph,
        env: &[(&str, String)],
        mailboxes: &[&str],
    ) -> Self {
        let data = tempfile::tempdir().unwrap();
        let callers = data.path().join("callers.toml");
        std::fs::write(
            &callers,
            format!(
                "[[caller]]\nname = \"loadtest\"\nrole = \"admin\"\nkey_sha256 = \"{}\"\n",
                key::hex(&key::digest(KEY))
            ),
        )
        .unwrap();
        let (grpc_port, http_port) = (free_port(), free_port());
        identity.register_redirect_uri(&format!("http://127.0.0.1:{http_port}/oauth2/callback"));
        let child = Command::new(binary())
            .env_clear()
            .env("GRAPH_MAILER_TENANT_ID", TENANT)
            .env("GRAPH_MAILER_CLIENT_ID", CLIENT_ID)
            .env("GRAPH_MAILER_CLIENT_SECRET", CLIENT_SECRET)
            .env("GRAPH_MAILER_AUTHORITY_URL", &identity.base_url)
            .env("GRAPH_MAILER_GRAPH_URL", &graph.base_url)
            .env("GRAPH_MAILER_GRAPH_SCOPES", "Mail.Send Mail.ReadWrite")
            .env("GRAPH_MAILER_DATA_DIR", data.path())
            .env("GRAPH_MAILER_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
            .env("GRAPH_MAILER_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
            .env(
                "GRAPH_MAILER_PUBLIC_URL",
                format!("http://127.0.0.1:{http_port}"),
            )
            .env("GRAPH_MAILER_LOG_FORMAT", "json")
            .env("GRAPH_MAILER_CALLERS_FILE", &callers)
            .env(
                "RUST_LOG",
                std::env::var("LOADTEST_SERVICE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ready = format!("http://127.0.0.1:{http_port}/readyz");
        for _ in 0..400 {
            if reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let service = Self {
            child,
            grpc: format!("http://127.0.0.1:{grpc_port}"),
            _data: data,
        };
        let mut client = service.client().await;
        for mailbox in mailboxes {
            let link = client
                .connect(proto::ConnectRequest {
                    mailbox: (*mailbox).into(),
                    force_consent: false,
                })
                .await
                .unwrap();
            let page = reqwest::get(&link.into_inner().authorization_url)
                .await
                .unwrap();
            assert_eq!(page.status(), 200, "connect failed");
        }
        service
    }

    pub async fn client(&self) -> Client {
        let channel = Channel::from_shared(self.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let bearer = Bearer(MetadataValue::try_from(format!("Bearer {KEY}")).unwrap());
        MailerClient::with_interceptor(channel, bearer)
            .max_encoding_message_size(256 << 20)
            .max_decoding_message_size(256 << 20)
    }

    pub fn proc_status(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }

    /// User + system CPU time of the service so far.
    pub fn cpu_time(&self) -> Duration {
        cpu_time_of(self.child.id())
    }
}

/// User + system CPU time of a process so far.
pub fn cpu_time_of(pid: u32) -> Duration {
    {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let per_second: u64 = String::from_utf8(
            Command::new("getconf")
                .arg("CLK_TCK")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap_or(100);
        Duration::from_secs_f64(ticks as f64 / per_second as f64)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A 2 KB message.
pub fn small_message() -> proto::SendMailRequest {
    proto::SendMailRequest {
        mailbox: MAILBOX.into(),
        to: vec![proto::EmailAddress {
            address: "bob@example.com".into(),
            name: "Bob".into(),
        }],
        subject: "Your order has shipped".into(),
        text_body: "Hello Bob, your order has shipped. ".repeat(58),
        ..Default::default()
    }
}

pub struct Run {
    pub messages: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl Run {
    pub fn per_second(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
    pub fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort();
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(index).copied().unwrap_or_default()
    }
}
