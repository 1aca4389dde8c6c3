//! Typed, validated settings.
//!
//! [`raw`] reads what the operator wrote; [`Settings::from_raw`] turns it into types that
//! cannot hold a bad value, collecting every problem at once with a sentence saying how to fix
//! it, plus warnings for values that work but are probably mistakes.

pub mod azure;
pub mod raw;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use url::Url;

pub use azure::{AzureSettings, ClientId, ClientSecretSource, GraphScopes, TenantId};
pub use raw::{ENV_PREFIX, RawSettings};

/// Where messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Microsoft Graph: real delivery.
    Graph,
    /// `.eml` files in the data directory: nothing is delivered.
    Sandbox,
}

impl TransportKind {
    /// The name used in configuration and Status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Graph => "graph",
            Self::Sandbox => "sandbox",
        }
    }
}

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
pub struct PublicUrl(Url);

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
}

/// The validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub transport: TransportKind,
    /// The app registration; `Some` exactly when the transport is Graph.
    pub azure: Option<AzureSettings>,
    pub public_url: PublicUrl,
    pub authority_url: Url,
    pub graph_url: Url,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: DatabaseUrl,
    pub encryption_key: KeySource,
    pub log_format: LogFormat,
    /// Largest message accepted, attachments included.
    pub max_message_bytes: u64,
    pub tokens: TokenSettings,
    pub graph: GraphSettings,
    /// How long in-flight calls may take to finish after a shutdown signal.
    pub shutdown_drain: Duration,
    /// How often the store is pinged for readiness.
    pub health_interval: Duration,
    /// Values that work but are probably mistakes.
    pub warnings: Vec<String>,
}

/// Microsoft's own ceiling on a message's size.
pub const MICROSOFT_MAX_MESSAGE_BYTES: u64 = 150 * 1024 * 1024;

impl Settings {
    /// Loads from an optional TOML file and the process environment, then validates.
    pub fn load(config_file: Option<&std::path::Path>) -> Result<Self, String> {
        let (raw, notes) = raw::load(config_file, std::env::vars())?;
        let mut settings = Self::from_raw(raw)?;
        for name in notes.unknown_variables {
            settings.warnings.push(format!(
                "{name} is not a graph-mailer setting (misspelt?); it is ignored"
            ));
        }
        Ok(settings)
    }

    /// Validates raw settings, reporting every problem at once.
    pub fn from_raw(raw: RawSettings) -> Result<Self, String> {
        let mut problems = Problems::default();
        let mut warnings = Vec::new();

        let public_url = problems.take(parse_public_url(&raw.public_url, &mut warnings));
        let authority_url =
            problems.take(parse_url("GRAPH_MAILER_AUTHORITY_URL", &raw.authority_url));
        let graph_url = problems.take(parse_url("GRAPH_MAILER_GRAPH_URL", &raw.graph_url));
        let grpc_addr = problems.take(parse_addr("GRAPH_MAILER_GRPC_ADDR", &raw.grpc_addr));
        let http_addr = problems.take(parse_addr("GRAPH_MAILER_HTTP_ADDR", &raw.http_addr));
        let log_format = problems.take(parse_log_format(&raw.log_format));
        let transport = problems.take(parse_transport(&raw));
        let azure = match transport {
            Some(TransportKind::Graph) => problems.take(parse_azure(&raw, &mut warnings)),
            _ => None,
        };
        let max_message_bytes = problems.take(parse_max_message_bytes(raw.max_message_bytes));
        let graph = problems.take(parse_graph_settings(&raw));
        let data_dir = PathBuf::from(&raw.data_dir);
        let database_url = DatabaseUrl(raw.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("graph-mailer.db").display()
            )
        }));
        let encryption_key = match (&raw.encryption_key, &raw.encryption_key_file) {
            (Some(key), None) => KeySource::Value(key.clone()),
            (None, Some(file)) => KeySource::File(file.into()),
            (None, None) => KeySource::Generated(data_dir.join("encryption.key")),
            (Some(_), Some(_)) => {
                problems.errors.push(
                    "set GRAPH_MAILER_ENCRYPTION_KEY or GRAPH_MAILER_ENCRYPTION_KEY_FILE, not both"
                        .into(),
                );
                KeySource::Generated(data_dir.join("encryption.key"))
            }
        };
        if !problems.errors.is_empty() {
            return Err(problems.errors.join("\n"));
        }
        let (
            Some(public_url),
            Some(authority_url),
            Some(graph_url),
            Some(grpc_addr),
            Some(http_addr),
            Some(log_format),
            Some(transport),
            Some(max_message_bytes),
            Some(graph),
        ) = (
            public_url,
            authority_url,
            graph_url,
            grpc_addr,
            http_addr,
            log_format,
            transport,
            max_message_bytes,
            graph,
        )
        else {
            return Err("invalid settings".into());
        };
        Ok(Self {
            transport,
            azure,
            public_url,
            authority_url,
            graph_url,
            grpc_addr,
            http_addr,
            data_dir,
            database_url,
            encryption_key,
            log_format,
            max_message_bytes,
            tokens: TokenSettings {
                refresh_margin: chrono::Duration::seconds(secs(raw.refresh_margin_seconds)),
                refresh_ahead: chrono::Duration::seconds(secs(
                    raw.refresh_ahead_seconds.max(raw.refresh_margin_seconds),
                )),
                idle_refresh_after: chrono::Duration::days(secs(raw.refresh_idle_days.max(1))),
                check_interval: Duration::from_secs(raw.refresh_interval_seconds.max(1)),
            },
            graph,
            shutdown_drain: Duration::from_secs(raw.shutdown_drain_seconds),
            health_interval: Duration::from_secs(raw.health_interval_seconds.max(1)),
            warnings,
        })
    }

    /// Every setting as `(variable, value)` for display, secrets redacted.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let unset = || "(not set)".to_owned();
        let mut rows = vec![("GRAPH_MAILER_TRANSPORT", self.transport.as_str().to_owned())];
        match &self.azure {
            Some(azure) => {
                rows.push(("GRAPH_MAILER_TENANT_ID", azure.tenant.to_string()));
                rows.push(("GRAPH_MAILER_CLIENT_ID", azure.client_id.to_string()));
                match &azure.client_secret {
                    ClientSecretSource::Value(secret) => rows.push((
                        "GRAPH_MAILER_CLIENT_SECRET",
                        redacted(secret.expose_secret().len()),
                    )),
                    ClientSecretSource::File(path) => rows.push((
                        "GRAPH_MAILER_CLIENT_SECRET_FILE",
                        path.display().to_string(),
                    )),
                }
                rows.push((
                    "GRAPH_MAILER_CLIENT_SECRET_EXPIRES_AT",
                    azure
                        .client_secret_expires_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(unset),
                ));
                rows.push(("GRAPH_MAILER_GRAPH_SCOPES", azure.scopes.names().join(" ")));
            }
            None => rows.push(("GRAPH_MAILER_TENANT_ID", unset())),
        }
        rows.extend([
            (
                "GRAPH_MAILER_PUBLIC_URL",
                self.public_url.as_str().to_owned(),
            ),
            ("redirect URI", self.public_url.redirect_uri()),
            ("GRAPH_MAILER_AUTHORITY_URL", self.authority_url.to_string()),
            ("GRAPH_MAILER_GRAPH_URL", self.graph_url.to_string()),
            ("GRAPH_MAILER_GRPC_ADDR", self.grpc_addr.to_string()),
            ("GRAPH_MAILER_HTTP_ADDR", self.http_addr.to_string()),
            ("GRAPH_MAILER_DATA_DIR", self.data_dir.display().to_string()),
            ("GRAPH_MAILER_DATABASE_URL", self.database_url.redacted()),
            (
                "GRAPH_MAILER_ENCRYPTION_KEY",
                match &self.encryption_key {
                    KeySource::Value(key) => redacted(key.expose_secret().len()),
                    KeySource::File(path) => format!("from file {}", path.display()),
                    KeySource::Generated(path) => format!("generated in {}", path.display()),
                },
            ),
            (
                "GRAPH_MAILER_MAX_MESSAGE_BYTES",
                self.max_message_bytes.to_string(),
            ),
            (
                "GRAPH_MAILER_LOG_FORMAT",
                match self.log_format {
                    LogFormat::Text => "text".into(),
                    LogFormat::Json => "json".into(),
                },
            ),
        ]);
        rows
    }
}

/// Collects every problem instead of stopping at the first.
#[derive(Default)]
struct Problems {
    errors: Vec<String>,
}

impl Problems {
    fn take<T>(&mut self, result: Result<T, String>) -> Option<T> {
        result.map_err(|e| self.errors.push(e)).ok()
    }
}

fn secs(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX / 1_000_000)
}

fn redacted(len: usize) -> String {
    format!("[REDACTED, {len} characters]")
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

fn parse_public_url(value: &str, warnings: &mut Vec<String>) -> Result<PublicUrl, String> {
    let url = parse_url("GRAPH_MAILER_PUBLIC_URL", value)?;
    let public = PublicUrl(url);
    if !public.accepted_by_microsoft() {
        warnings.push(format!(
            "GRAPH_MAILER_PUBLIC_URL is {value}: Microsoft accepts plain-http redirect URIs only \
             for localhost; serve the callback over https (for example behind your ingress)"
        ));
    }
    Ok(public)
}

fn parse_url(variable: &str, value: &str) -> Result<Url, String> {
    match Url::parse(value.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
        _ => Err(format!(
            "{variable} is \"{value}\": give an absolute http(s) URL such as https://mail.example.com"
        )),
    }
}

fn parse_addr(variable: &str, value: &str) -> Result<SocketAddr, String> {
    value.trim().parse().map_err(|_| {
        format!("{variable} is \"{value}\": give an IP address and port such as 0.0.0.0:50051")
    })
}

fn parse_log_format(value: &str) -> Result<LogFormat, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!(
            "GRAPH_MAILER_LOG_FORMAT is \"{value}\": use text or json"
        )),
    }
}

fn parse_transport(raw: &RawSettings) -> Result<TransportKind, String> {
    match raw
        .transport
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None if raw.tenant_id.is_some() => Ok(TransportKind::Graph),
        None => Ok(TransportKind::Sandbox),
        Some("sandbox") => Ok(TransportKind::Sandbox),
        Some("graph") if raw.tenant_id.is_some() => Ok(TransportKind::Graph),
        Some("graph") => Err(
            "GRAPH_MAILER_TRANSPORT is graph but GRAPH_MAILER_TENANT_ID is not set: configure the \
             app registration (tenant ID, client ID, client secret) or use the sandbox"
                .into(),
        ),
        Some(other) => Err(format!(
            "GRAPH_MAILER_TRANSPORT is \"{other}\": use graph or sandbox"
        )),
    }
}

fn parse_azure(raw: &RawSettings, warnings: &mut Vec<String>) -> Result<AzureSettings, String> {
    let mut problems = Problems::default();
    let tenant = problems.take(
        raw.tenant_id
            .as_deref()
            .ok_or_else(|| "GRAPH_MAILER_TENANT_ID is not set".to_owned())
            .and_then(TenantId::parse),
    );
    let client_id = problems.take(
        raw.client_id
            .as_deref()
            .ok_or_else(|| {
                "GRAPH_MAILER_CLIENT_ID is not set: copy the \"Application (client) ID\" from the \
                 app registration's overview page"
                    .to_owned()
            })
            .and_then(ClientId::parse),
    );
    let client_secret = problems.take(match (&raw.client_secret, &raw.client_secret_file) {
        (Some(secret), None) => {
            if azure::is_guid(secret.expose_secret().trim()) {
                warnings.push(secret_id_warning("GRAPH_MAILER_CLIENT_SECRET"));
            }
            Ok(ClientSecretSource::Value(secret.clone()))
        }
        (None, Some(file)) => Ok(ClientSecretSource::File(file.into())),
        (Some(_), Some(_)) => Err(
            "set GRAPH_MAILER_CLIENT_SECRET or GRAPH_MAILER_CLIENT_SECRET_FILE, not both".into(),
        ),
        (None, None) => Err(
            "no client secret: set GRAPH_MAILER_CLIENT_SECRET (or _FILE) to the secret's Value \
             from the app registration's \"Certificates & secrets\" page"
                .into(),
        ),
    });
    let expires_at = problems.take(
        raw.client_secret_expires_at
            .as_deref()
            .map(azure::parse_expiry)
            .transpose(),
    );
    let scopes = problems.take(GraphScopes::parse(&raw.graph_scopes));
    match (tenant, client_id, client_secret, expires_at, scopes) {
        (Some(tenant), Some(client_id), Some(client_secret), Some(expires_at), Some(scopes)) => {
            Ok(AzureSettings {
                tenant,
                client_id,
                client_secret,
                client_secret_expires_at: expires_at,
                client_secret_warning: chrono::Duration::days(secs(raw.client_secret_warning_days)),
                secret_reload_interval: Duration::from_secs(raw.secret_reload_seconds.max(1)),
                scopes,
            })
        }
        _ => Err(problems.errors.join("\n")),
    }
}

/// The warning for a client secret that looks like the secret's ID.
pub fn secret_id_warning(variable: &str) -> String {
    format!(
        "{variable} looks like a GUID: that is probably the secret's ID, not its Value; copy the \
         Value column of \"Certificates & secrets\" (it is shown only once, right after creation)"
    )
}

fn parse_max_message_bytes(value: u64) -> Result<u64, String> {
    if value == 0 || value > MICROSOFT_MAX_MESSAGE_BYTES {
        Err(format!(
            "GRAPH_MAILER_MAX_MESSAGE_BYTES is {value}: give a size in bytes from 1 to \
             {MICROSOFT_MAX_MESSAGE_BYTES} (Microsoft's 150 MB limit)"
        ))
    } else {
        Ok(value)
    }
}

fn parse_graph_settings(raw: &RawSettings) -> Result<GraphSettings, String> {
    if raw.mailbox_concurrency == 0 {
        return Err("GRAPH_MAILER_MAILBOX_CONCURRENCY must be at least 1".into());
    }
    if raw.retry_max_attempts == 0 {
        return Err("GRAPH_MAILER_RETRY_MAX_ATTEMPTS must be at least 1".into());
    }
    Ok(GraphSettings {
        request_timeout: Duration::from_secs(raw.graph_timeout_seconds.max(1)),
        connect_timeout: Duration::from_secs(raw.graph_connect_timeout_seconds.max(1)),
        retry_max_attempts: u32::try_from(raw.retry_max_attempts).unwrap_or(u32::MAX),
        retry_budget: Duration::from_secs(raw.retry_budget_seconds),
        mailbox_concurrency: usize::try_from(raw.mailbox_concurrency).unwrap_or(usize::MAX),
        concurrency_wait: Duration::from_secs(raw.concurrency_wait_seconds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawSettings {
        let env = pairs
            .iter()
            .map(|(k, v)| (format!("{ENV_PREFIX}{k}"), (*v).to_owned()));
        raw::load(None, env).unwrap().0
    }

    const TENANT: &str = "11111111-2222-3333-4444-555555555555";
    const CLIENT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

    #[test]
    fn without_a_tenant_the_sandbox_is_chosen() {
        let settings = Settings::from_raw(raw(&[])).unwrap();
        assert_eq!(settings.transport, TransportKind::Sandbox);
        assert!(settings.azure.is_none());
        assert!(settings.database_url.expose().starts_with("sqlite://"));
        assert_eq!(
            settings.public_url.redirect_uri(),
            "http://localhost:8080/oauth2/callback"
        );
    }

    #[test]
    fn a_tenant_selects_graph_and_needs_a_client_id_and_secret() {
        let error = Settings::from_raw(raw(&[("TENANT_ID", TENANT)])).unwrap_err();
        assert!(
            error.contains("GRAPH_MAILER_CLIENT_ID is not set"),
            "{error}"
        );
        assert!(error.contains("no client secret"), "{error}");
        let settings = Settings::from_raw(raw(&[
            ("TENANT_ID", TENANT),
            ("CLIENT_ID", CLIENT),
            ("CLIENT_SECRET", "s3cr3t~value"),
        ]))
        .unwrap();
        assert_eq!(settings.transport, TransportKind::Graph);
        assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
    }

    #[test]
    fn a_secret_that_looks_like_a_secret_id_is_warned_about() {
        let settings = Settings::from_raw(raw(&[
            ("TENANT_ID", TENANT),
            ("CLIENT_ID", CLIENT),
            ("CLIENT_SECRET", "99999999-8888-7777-6666-555555555555"),
        ]))
        .unwrap();
        assert!(settings.warnings[0].contains("secret's ID"));
    }

    #[test]
    fn plain_http_outside_localhost_is_warned_about_and_bad_urls_are_refused() {
        let settings =
            Settings::from_raw(raw(&[("PUBLIC_URL", "http://mail.example.com")])).unwrap();
        assert!(
            settings.warnings[0].contains("https"),
            "{:?}",
            settings.warnings
        );
        let error = Settings::from_raw(raw(&[("PUBLIC_URL", "mail.example.com")])).unwrap_err();
        assert!(error.contains("GRAPH_MAILER_PUBLIC_URL"), "{error}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let error = Settings::from_raw(raw(&[
            ("GRPC_ADDR", "nowhere"),
            ("LOG_FORMAT", "xml"),
            ("TRANSPORT", "smtp"),
        ]))
        .unwrap_err();
        assert_eq!(error.lines().count(), 3, "{error}");
    }

    #[test]
    fn secrets_never_appear_in_debug_or_describe() {
        let settings = Settings::from_raw(raw(&[
            ("TENANT_ID", TENANT),
            ("CLIENT_ID", CLIENT),
            ("CLIENT_SECRET", "very-secret-value"),
            ("ENCRYPTION_KEY", "another-secret-value"),
            ("DATABASE_URL", "postgres://app:hunter2@db/mail"),
        ]))
        .unwrap();
        let shown = format!("{settings:?} {:?}", settings.describe());
        for secret in ["very-secret-value", "another-secret-value", "hunter2"] {
            assert!(!shown.contains(secret), "{secret} leaked");
        }
    }

    #[test]
    fn the_message_size_cannot_exceed_microsofts_limit() {
        let error = Settings::from_raw(raw(&[("MAX_MESSAGE_BYTES", "200000000")])).unwrap_err();
        assert!(error.contains("150 MB"), "{error}");
    }
}
