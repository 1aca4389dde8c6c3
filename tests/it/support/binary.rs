//! The real binary as a child process: spawn it with settings, wait until it is ready, call it
//! (with a caller key, over TLS, or with hand-made bytes), read its peak memory, stop it.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::{Buf, BufMut, Bytes};
use graph_mailer::proto::mailer_client::MailerClient;
use tonic::{
    Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

pub const BINARY: &str = env!("CARGO_BIN_EXE_graph-mailer");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running graph-mailer process.
pub struct Service {
    pub child: Child,
    pub grpc_port: u16,
    pub http_port: u16,
    pub data_dir: PathBuf,
    _data: Option<tempfile::TempDir>,
}

impl Service {
    /// Starts the binary in a fresh data directory; `env` names settings without the prefix.
    pub fn spawn(env: &[(&str, String)]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().to_path_buf();
        let mut service = Self::spawn_in(&dir, env);
        service._data = Some(data);
        service
    }

    /// Starts the binary on `data_dir`.
    pub fn spawn_in(data_dir: &Path, env: &[(&str, String)]) -> Self {
        Self::spawn_with_process_env(data_dir, env, &[])
    }

    /// Starts the binary on `data_dir` with variables outside graph-mailer's own as well
    /// (such as `HTTP_PROXY`), named in full.
    pub fn spawn_with_process_env(
        data_dir: &Path,
        env: &[(&str, String)],
        process_env: &[(&str, String)],
    ) -> Self {
        let (grpc_port, http_port) = (free_port(), free_port());
        let mut command = Command::new(BINARY);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GRAPH_MAILER_DATA_DIR", data_dir)
            .env("GRAPH_MAILER_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
            .env("GRAPH_MAILER_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
            .env(
                "GRAPH_MAILER_PUBLIC_URL",
                format!("http://127.0.0.1:{http_port}"),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(format!("GRAPH_MAILER_{name}"), value);
        }
        for (name, value) in process_env {
            command.env(name, value);
        }
        Self {
            child: command.spawn().unwrap(),
            grpc_port,
            http_port,
            data_dir: data_dir.to_path_buf(),
            _data: None,
        }
    }

    /// Waits until `/readyz` answers 200 on plain HTTP.
    pub async fn wait_ready(&self) {
        self.wait_ready_at(&format!("http://127.0.0.1:{}/readyz", self.http_port))
            .await
    }

    /// Waits until `url` answers 200.
    pub async fn wait_ready_at(&self, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        while Instant::now() < deadline {
            if let Ok(response) = client.get(url).send().await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the service did not become ready at {url}");
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://127.0.0.1:{}", self.grpc_port))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A client without a key.
    pub async fn client(&self) -> MailerClient<Channel> {
        MailerClient::new(self.channel().await)
            .max_encoding_message_size(usize::MAX)
            .max_decoding_message_size(usize::MAX)
    }

    /// A client that presents `key`.
    pub async fn client_with_key(&self, key: &str) -> KeyedClient {
        keyed(self.channel().await, key)
    }

    /// Sends SIGTERM (or another signal).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// The most memory the process has held (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for exit; returns the exit code and everything written to stdout and stderr.
    pub fn wait(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the service did not exit");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut output = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut output)
            .unwrap();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut output)
            .unwrap();
        (status.code(), output)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub type KeyedClient = MailerClient<InterceptedService<Channel, Bearer>>;

/// A client on `channel` presenting `key`.
pub fn keyed(channel: Channel, key: &str) -> KeyedClient {
    let value = MetadataValue::try_from(format!("Bearer {key}")).unwrap();
    MailerClient::with_interceptor(channel, Bearer(value))
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX)
}

/// Connects `mailbox` through `admin` and plays its owner's browser on the sign-in link.
pub async fn connect_as_owner(admin: &mut KeyedClient, mailbox: &str) {
    let link = admin
        .connect(graph_mailer::proto::ConnectRequest {
            mailbox: mailbox.into(),
            force_consent: false,
        })
        .await
        .unwrap()
        .into_inner()
        .authorization_url;
    let (status, page) = super::browse(&link).await;
    assert_eq!(status, 200, "{page}");
}

/// A callers-file entry for `name` with `key`.
pub fn caller_entry(name: &str, key: &str, role: &str, mailboxes: &[&str], extra: &str) -> String {
    let digest = graph_mailer::callers::key::hex(&graph_mailer::callers::key::digest(key));
    let list: Vec<String> = mailboxes.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        "[[caller]]\nname = \"{name}\"\nkey_sha256 = \"{digest}\"\nrole = \"{role}\"\nmailboxes = [{}]\n{extra}\n",
        list.join(", ")
    )
}

/// Sends hand-made bytes as a Mailer call: for requests no well-behaved client would build.
pub async fn raw_call(channel: Channel, method: &str, message: Bytes) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let path =
        http::uri::PathAndQuery::try_from(format!("/graphmailer.v1.Mailer/{method}")).unwrap();
    grpc.unary(Request::new(message), path, RawCodec)
        .await
        .map(|_| ())
}

/// Passes bytes through unchanged.
#[derive(Clone, Copy)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
