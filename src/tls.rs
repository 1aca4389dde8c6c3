//! TLS for both listeners, with certificates that renew on disk.
//!
//! The certificate, key and (for mTLS) client CA are read into rustls server configurations:
//! one for gRPC (ALPN `h2`, client certificates required when a client CA is configured) and one
//! for HTTP (ALPN `h2` and `http/1.1`). The files are re-read when they change (cert-manager
//! rewrites them) and on SIGHUP; each new connection uses the configuration in force when it
//! arrives. A renewal that cannot be read keeps the previous configuration.
//!
//! Handshakes run in tasks of their own (at most [`HANDSHAKE_TIMEOUT`] each), so a slow or
//! silent client holds up nobody; finished connections are handed to the servers through a
//! channel.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use sha2::{Digest, Sha256};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_util::sync::CancellationToken;

use crate::{
    periodic::{WatchReason, spawn_file_watcher},
    settings::TlsSettings,
    variables,
};

/// How long a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS connection.
pub type TlsConnection = TlsStream<tokio::net::TcpStream>;

/// The server configurations in force, re-read from disk when the files change.
pub struct ReloadingTls {
    settings: TlsSettings,
    current: RwLock<Configs>,
}

struct Configs {
    grpc: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("cert_file", &self.settings.cert_file)
            .field("mtls", &self.settings.client_ca_file.is_some())
            .finish()
    }
}

/// Which listener a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// gRPC: HTTP/2 only; client certificates when a client CA is configured.
    Grpc,
    /// The HTTP listener: HTTP/2 and HTTP/1.1, no client certificates (browsers come here).
    Http,
}

impl ReloadingTls {
    /// Reads the files; a problem is a start-up error.
    pub fn load(settings: &TlsSettings) -> Result<Self, String> {
        let configs = read(settings)?;
        Ok(Self {
            settings: settings.clone(),
            current: RwLock::new(configs),
        })
    }

    /// The configuration for new connections to `listener`.
    pub fn config(&self, listener: Listener) -> Arc<ServerConfig> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        match listener {
            Listener::Grpc => current.grpc.clone(),
            Listener::Http => current.http.clone(),
        }
    }

    /// Re-reads the files; an unchanged set does nothing, a broken one keeps the previous.
    pub fn reload(&self) {
        let Some(fingerprint) = fingerprint(&self.settings) else {
            tracing::error!("cannot read the TLS files; the previous certificate stays in use");
            return;
        };
        if self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .fingerprint
            == fingerprint
        {
            return;
        }
        match read(&self.settings) {
            Ok(configs) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = configs;
                tracing::info!("TLS certificate files changed; new connections use them");
            }
            Err(problem) => {
                tracing::error!(
                    problem,
                    "the TLS files changed but cannot be used; the previous certificate stays in use"
                );
                self.current
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .fingerprint = fingerprint;
            }
        }
    }

    /// Re-reads the files every `interval` and on SIGHUP until `stop`.
    pub fn spawn_watcher(
        self: Arc<Self>,
        interval: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        spawn_file_watcher(interval, stop, move |reason| {
            if reason == WatchReason::Hangup {
                tracing::info!("SIGHUP: re-reading the TLS files");
            }
            self.reload();
        })
    }

    /// Accepts TCP connections on `listener` and hands over those whose handshake succeeds.
    pub fn accept(
        self: &Arc<Self>,
        listener: TcpListener,
        kind: Listener,
        stop: CancellationToken,
    ) -> mpsc::Receiver<TlsConnection> {
        let (sender, receiver) = mpsc::channel(64);
        let tls = self.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => break,
                    accepted = listener.accept() => accepted,
                };
                let (tcp, peer) = match accepted {
                    Ok(connection) => connection,
                    Err(error) => {
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = TlsAcceptor::from(tls.config(kind));
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send(stream).await;
                        }
                        Ok(Err(error)) => handshake_failed(peer, &error.to_string()),
                        Err(_) => handshake_failed(peer, "timed out"),
                    }
                });
            }
        });
        receiver
    }
}

fn handshake_failed(peer: SocketAddr, reason: &str) {
    tracing::info!(%peer, reason, "TLS handshake failed");
}

/// The listener of TLS connections, for axum.
pub struct AxumTlsListener {
    pub connections: mpsc::Receiver<TlsConnection>,
    pub local_addr: SocketAddr,
}

impl axum::serve::Listener for AxumTlsListener {
    type Io = TlsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.connections.recv().await {
                Some(connection) => {
                    let peer = connection
                        .get_ref()
                        .0
                        .peer_addr()
                        .unwrap_or(self.local_addr);
                    return (connection, peer);
                }
                // The accept loop stopped (shutdown): accept nothing more.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// The URI and DNS names in a certificate's subject alternative names.
pub fn subject_alt_names(certificate: &CertificateDer<'_>) -> Vec<String> {
    match webpki::EndEntityCert::try_from(certificate) {
        Ok(cert) => cert
            .valid_uri_names()
            .chain(cert.valid_dns_names())
            .map(str::to_owned)
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn read(settings: &TlsSettings) -> Result<Configs, String> {
    let fingerprint =
        fingerprint(settings).ok_or_else(|| "cannot read the TLS files".to_owned())?;
    let chain = certificates(&settings.cert_file, variables::TLS_CERT_FILE)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_file).map_err(|e| {
        format!(
            "{} {}: no PEM private key in it ({e})",
            variables::TLS_KEY_FILE,
            settings.key_file.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = || {
        ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())
    };
    let grpc_builder = match &settings.client_ca_file {
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(ca_file, variables::TLS_CLIENT_CA_FILE)? {
                roots.add(ca).map_err(|e| {
                    format!(
                        "{} {}: {e}",
                        variables::TLS_CLIENT_CA_FILE,
                        ca_file.display()
                    )
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| format!("{}: {e}", variables::TLS_CLIENT_CA_FILE))?;
            builder()?.with_client_cert_verifier(verifier)
        }
        None => builder()?.with_no_client_auth(),
    };
    let mismatch = |e: rustls::Error| {
        format!(
            "{} and {} do not go together: {e}",
            variables::TLS_CERT_FILE,
            variables::TLS_KEY_FILE
        )
    };
    let mut grpc = grpc_builder
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(mismatch)?;
    grpc.alpn_protocols = vec![b"h2".to_vec()];
    let mut http = builder()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(mismatch)?;
    http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Configs {
        grpc: Arc::new(grpc),
        http: Arc::new(http),
        fingerprint,
    })
}

fn certificates(path: &Path, variable: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("{variable} {}: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{variable} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(chain)
}

/// A hash of the three files' contents: what tells a renewal from a poll.
fn fingerprint(settings: &TlsSettings) -> Option<[u8; 32]> {
    let mut hasher = Sha256::new();
    let files: [Option<&PathBuf>; 3] = [
        Some(&settings.cert_file),
        Some(&settings.key_file),
        settings.client_ca_file.as_ref(),
    ];
    for file in files.into_iter().flatten() {
        hasher.update(std::fs::read(file).ok()?);
        hasher.update([0]);
    }
    Some(hasher.finalize().into())
}
