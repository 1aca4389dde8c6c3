//! The typed values settings are made of: each can hold only a valid value.

use std::{path::PathBuf, time::Duration};

use secrecy::SecretString;
use url::Url;

/// Microsoft's own ceiling on a message's size.
pub const MICROSOFT_MAX_MESSAGE_BYTES: u64 = 150 * 1024 * 1024;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the key that encrypts tokens at rest comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `GRAPH_MAILER_ENCRYPTION_KEY`.
    Value(SecretString),
    /// `GRAPH_MAILER_ENCRYPTION_KEY_FILE`.
    File(PathBuf),
    /// Neither is set: a key file in the data directory, generated on first start.
    Generated(PathBuf),
}

/// The service's public base URL, from which the OAuth redirect URI is derived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(pub(super) Url);

impl PublicUrl {
    /// The redirect URI to register in the app registration.
    pub fn redirect_uri(&self) -> String {
        format!("{}/oauth2/callback", self.0.as_str().trim_end_matches('/'))
    }

    /// Whether Microsoft accepts this URL for a redirect URI: https, or http on localhost.
    pub fn accepted_by_microsoft(&self) -> bool {
        self.0.scheme() == "https" || self.is_localhost()
    }

    fn is_localhost(&self) -> bool {
        matches!(
            self.0.host_str(),
            Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
        )
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// When and how tokens are refreshed.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// A token closer than this to its expiry is refreshed before use.
    pub refresh_margin: chrono::Duration,
    /// The background task refreshes tokens this long before they expire.
    pub refresh_ahead: chrono::Duration,
    /// A connection idle for this long is refreshed anyway, so Microsoft's 90-day inactivity
    /// expiry never hits a quiet mailbox.
    pub idle_refresh_after: chrono::Duration,
    /// How often the background task looks for tokens to refresh.
    pub check_interval: Duration,
}

/// How Graph requests are made and retried.
#[derive(Debug, Clone)]
pub struct GraphSettings {
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts per Graph request, the first included.
    pub retry_max_attempts: u32,
    /// Total time a send may spend retrying.
    pub retry_budget: Duration,
    /// In-flight Graph requests per mailbox (Outlook allows 4).
    pub mailbox_concurrency: usize,
    /// How long a send waits for one of those places before giving up.
    pub concurrency_wait: Duration,
    /// How long the service looks in Sent Items after an ambiguous answer to a send.
    pub reconcile_window: Duration,
    /// How long sends are held back after Exchange stopped a mailbox sending.
    pub blocked_pause: Duration,
}

/// The store's URL: `sqlite://…` or `postgres://…`. It may hold a password, so it is shown
/// only redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// A URL as given.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL, password included: for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced, for display.
    pub fn redacted(&self) -> String {
        match Url::parse(&self.0) {
            Ok(mut parsed) if parsed.password().is_some() => {
                let _ = parsed.set_password(Some("REDACTED"));
                parsed.to_string()
            }
            _ => self.0.clone(),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Who may call, and what is recorded of it.
#[derive(Debug, Clone)]
pub struct AccessSettings {
    /// The callers file; `None` runs open (the sandbox, or graph mode explicitly allowed).
    pub callers_file: Option<PathBuf>,
    /// The only mailboxes Connect accepts; empty: any.
    pub allowed_mailboxes: Vec<crate::domain::MailboxPattern>,
    /// Whether gRPC reflection is served.
    pub reflection: bool,
    pub audit_log: AuditLogTarget,
}

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditLogTarget {
    Off,
    Stdout,
    File(PathBuf),
}

/// The certificate both listeners serve, and the CA that signs gRPC callers' certificates.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// mTLS: gRPC callers must present a certificate signed by one of these CAs.
    pub client_ca_file: Option<PathBuf>,
}

/// What one call, one connection and all calls together may take.
#[derive(Debug, Clone, Copy)]
pub struct LimitSettings {
    /// Request bytes all calls together may hold.
    pub max_inflight_bytes: u64,
    pub rpc_timeout: Duration,
    pub max_streams_per_connection: u32,
}
