//! Typed, validated settings.
//!
//! - `crate::variables`: every `GRAPH_MAILER_*` variable, named once, with its default and
//!   meaning.
//! - [`raw`]: what the operator wrote (defaults, TOML file, environment).
//! - [`types`]: the typed values settings are made of.
//! - [`validate`] and [`azure`]: each section parses itself, collecting every problem at once
//!   with a sentence saying how to fix it, plus warnings for values that work but are probably
//!   mistakes.
//! - [`scopes`]: the Graph permissions asked for, and the Graph resource they are for.
//! - [`outbox`]: the outbox's pacing limits, retries and retention.
//! - [`admin`]: the admin page: who may sign in, and for how long.

pub mod admin;
pub mod azure;
pub mod outbox;
pub mod raw;
pub mod scopes;
pub(crate) mod types;
mod validate;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use secrecy::ExposeSecret;
use url::Url;

/// The variables' names, where settings are read (see `crate::variables`).
pub use crate::variables as names;
use crate::variables;
pub use crate::variables::ENV_PREFIX;
pub use admin::{AdminId, AdminSettings};
pub use azure::{AzureSettings, ClientId, ClientSecretSource, TenantId, secret_id_warning};
pub use outbox::{OutboxSettings, PacingLimits};
pub use raw::RawSettings;
pub use scopes::{GraphResource, GraphScopes};
pub use types::{
    AccessSettings, AuditLogTarget, DatabaseUrl, GraphSettings, KeySource, LimitSettings,
    LogFormat, MICROSOFT_MAX_MESSAGE_BYTES, PublicUrl, TlsSettings, TokenSettings,
};
use validate::{
    Problems, database_url, key_source, parse_addr, parse_log_format, parse_max_message_bytes,
    parse_optional_addr, parse_public_url, parse_url,
};

/// Where messages go, as configured.
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
    /// The plaintext health-only listener (set by default when TLS is on).
    pub health_addr: Option<SocketAddr>,
    /// `/metrics` on a listener of its own.
    pub metrics_addr: Option<SocketAddr>,
    pub access: AccessSettings,
    pub admin: AdminSettings,
    pub tls: Option<TlsSettings>,
    pub limits: LimitSettings,
    pub outbox: OutboxSettings,
    /// How often watched files (client secret, callers, TLS certificate) are checked.
    pub file_reload_interval: Duration,
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
        let public_url = parse_public_url(&raw.public_url, &mut problems);
        let authority_url = problems.take(parse_url(variables::AUTHORITY_URL, &raw.authority_url));
        let graph_url = problems.take(parse_url(variables::GRAPH_URL, &raw.graph_url));
        let grpc_addr = problems.take(parse_addr(variables::GRPC_ADDR, &raw.grpc_addr));
        let http_addr = problems.take(parse_addr(variables::HTTP_ADDR, &raw.http_addr));
        let log_format = problems.take(parse_log_format(&raw.log_format));
        let graph_chosen = problems.take(AzureSettings::chosen(&raw));
        let azure = match graph_chosen {
            Some(true) => {
                AzureSettings::from_raw(&raw, graph_url.as_ref(), &mut problems).map(Some)
            }
            _ => Some(None),
        };
        let max_message_bytes = problems.take(parse_max_message_bytes(raw.max_message_bytes));
        let graph = GraphSettings::from_raw(&raw, &mut problems);
        let data_dir = PathBuf::from(&raw.data_dir);
        let access =
            AccessSettings::from_raw(&raw, graph_chosen == Some(true), &data_dir, &mut problems);
        let admin = AdminSettings::from_raw(&raw, graph_chosen == Some(true), &mut problems);
        let tls = TlsSettings::from_raw(&raw, &mut problems);
        let limits = LimitSettings::from_raw(&raw, &mut problems);
        let outbox = OutboxSettings::from_raw(&raw, &mut problems);
        let metrics_addr = problems.take(parse_optional_addr(
            variables::METRICS_ADDR,
            raw.metrics_addr.as_deref(),
        ));
        let default_health_addr = (raw.tls_cert_file.is_some()).then_some("0.0.0.0:8081");
        let health_addr = problems.take(parse_optional_addr(
            variables::HEALTH_ADDR,
            raw.health_addr.as_deref().or(default_health_addr),
        ));
        let database_url = database_url(&raw, &data_dir);
        let encryption_key = key_source(&raw, &data_dir, &mut problems);
        problems.finish(|warnings| {
            let azure = azure?;
            Some(Self {
                transport: match azure {
                    Some(_) => TransportKind::Graph,
                    None => TransportKind::Sandbox,
                },
                azure,
                public_url: public_url?,
                authority_url: authority_url?,
                graph_url: graph_url?,
                grpc_addr: grpc_addr?,
                http_addr: http_addr?,
                health_addr: health_addr?,
                metrics_addr: metrics_addr?,
                access: access?,
                admin: admin?,
                tls: tls?,
                limits: limits?,
                outbox: outbox?,
                file_reload_interval: Duration::from_secs(raw.secret_reload_seconds.max(1)),
                data_dir,
                database_url,
                encryption_key,
                log_format: log_format?,
                max_message_bytes: max_message_bytes?,
                tokens: TokenSettings::from_raw(&raw),
                graph: graph?,
                shutdown_drain: Duration::from_secs(raw.shutdown_drain_seconds),
                health_interval: Duration::from_secs(raw.health_interval_seconds.max(1)),
                warnings,
            })
        })
    }

    /// Every setting as `(variable, value)` for display, secrets redacted.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let unset = || "(not set)".to_owned();
        let mut rows = vec![(variables::TRANSPORT, self.transport.as_str().to_owned())];
        match &self.azure {
            Some(azure) => {
                rows.push((variables::TENANT_ID, azure.tenant.to_string()));
                rows.push((variables::CLIENT_ID, azure.client_id.to_string()));
                rows.push(match &azure.client_secret {
                    ClientSecretSource::Value(secret) => (
                        variables::CLIENT_SECRET,
                        redacted(secret.expose_secret().len()),
                    ),
                    ClientSecretSource::File(path) => {
                        (variables::CLIENT_SECRET_FILE, path.display().to_string())
                    }
                });
                rows.push((
                    variables::CLIENT_SECRET_EXPIRES_AT,
                    azure
                        .client_secret_expires_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(unset),
                ));
                rows.push((variables::GRAPH_SCOPES, azure.scopes.names().join(" ")));
            }
            None => rows.push((variables::TENANT_ID, unset())),
        }
        rows.extend([
            (variables::PUBLIC_URL, self.public_url.as_str().to_owned()),
            ("redirect URI", self.public_url.redirect_uri()),
            (variables::AUTHORITY_URL, self.authority_url.to_string()),
            (variables::GRAPH_URL, self.graph_url.to_string()),
            (variables::GRPC_ADDR, self.grpc_addr.to_string()),
            (variables::HTTP_ADDR, self.http_addr.to_string()),
            (variables::DATA_DIR, self.data_dir.display().to_string()),
            (variables::DATABASE_URL, self.database_url.redacted()),
            (
                variables::ENCRYPTION_KEY,
                match &self.encryption_key {
                    KeySource::Value(key) => redacted(key.expose_secret().len()),
                    KeySource::File(path) => format!("from file {}", path.display()),
                    KeySource::Generated(path) => format!("generated in {}", path.display()),
                },
            ),
            (
                variables::MAX_MESSAGE_BYTES,
                self.max_message_bytes.to_string(),
            ),
            (
                variables::LOG_FORMAT,
                match self.log_format {
                    LogFormat::Text => "text".into(),
                    LogFormat::Json => "json".into(),
                },
            ),
        ]);
        rows
    }
}

fn redacted(len: usize) -> String {
    format!("[REDACTED, {len} characters]")
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
            ("CALLERS_FILE", "/etc/graph-mailer/callers.toml"),
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
            ("CALLERS_FILE", "/etc/graph-mailer/callers.toml"),
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
            ("CALLERS_FILE", "/etc/graph-mailer/callers.toml"),
        ]))
        .unwrap();
        let shown = format!("{settings:?} {:?}", settings.describe());
        for secret in ["very-secret-value", "another-secret-value", "hunter2"] {
            assert!(!shown.contains(secret), "{secret} leaked");
        }
    }

    #[test]
    fn graph_mode_needs_a_callers_file_or_an_explicit_open_door() {
        let graph = [
            ("TENANT_ID", TENANT),
            ("CLIENT_ID", CLIENT),
            ("CLIENT_SECRET", "s3cr3t~value"),
        ];
        let error = Settings::from_raw(raw(&graph)).unwrap_err();
        assert!(
            error.contains("GRAPH_MAILER_CALLERS_FILE is not set"),
            "{error}"
        );
        let open = [&graph[..], &[("ALLOW_UNAUTHENTICATED", "true")]].concat();
        let settings = Settings::from_raw(raw(&open)).unwrap();
        assert!(
            settings.warnings[0].contains("anyone who reaches the gRPC port"),
            "{:?}",
            settings.warnings
        );
        let sandbox = Settings::from_raw(raw(&[])).unwrap();
        assert!(
            sandbox.warnings.is_empty(),
            "the sandbox stays open without a file"
        );
    }

    #[test]
    fn tls_needs_its_certificate_and_key_and_brings_a_plaintext_health_listener() {
        let error = Settings::from_raw(raw(&[("TLS_CERT_FILE", "/tls/tls.crt")])).unwrap_err();
        assert!(error.contains("GRAPH_MAILER_TLS_KEY_FILE"), "{error}");
        let settings = Settings::from_raw(raw(&[
            ("TLS_CERT_FILE", "/tls/tls.crt"),
            ("TLS_KEY_FILE", "/tls/tls.key"),
        ]))
        .unwrap();
        assert!(settings.tls.is_some());
        assert_eq!(settings.health_addr.unwrap().port(), 8081);
        assert!(Settings::from_raw(raw(&[])).unwrap().health_addr.is_none());
    }

    #[test]
    fn the_message_size_cannot_exceed_microsofts_limit() {
        let error = Settings::from_raw(raw(&[("MAX_MESSAGE_BYTES", "200000000")])).unwrap_err();
        assert!(error.contains("150 MB"), "{error}");
    }
}
