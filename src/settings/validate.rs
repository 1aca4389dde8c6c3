//! Validation: each section of the settings parses itself from [`RawSettings`] into a
//! [`Problems`] list, so one run reports every problem with a sentence saying how to fix it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use url::Url;

use super::{
    RawSettings,
    types::{
        AccessSettings, AuditLogTarget, DatabaseUrl, GraphSettings, KeySource, LimitSettings,
        LogFormat, MICROSOFT_MAX_MESSAGE_BYTES, PublicUrl, TlsSettings, TokenSettings,
    },
};
use crate::{
    domain::MailboxPattern,
    variables::{self, ENCRYPTION_KEY, ENCRYPTION_KEY_FILE},
};

/// Every problem found, and warnings for values that work but are probably mistakes.
#[derive(Debug, Default)]
pub struct Problems {
    errors: Vec<String>,
    pub(super) warnings: Vec<String>,
}

impl Problems {
    /// The value, or `None` with its problem recorded.
    pub(super) fn take<T>(&mut self, result: Result<T, String>) -> Option<T> {
        result.map_err(|e| self.errors.push(e)).ok()
    }

    pub(super) fn error(&mut self, problem: impl Into<String>) {
        self.errors.push(problem.into());
    }

    pub(super) fn warn(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }

    /// Every problem, one per line, when there are any; else what `build` makes of the parts
    /// (which are all present exactly when nothing was recorded).
    pub(super) fn finish<T>(
        self,
        build: impl FnOnce(Vec<String>) -> Option<T>,
    ) -> Result<T, String> {
        let Self { errors, warnings } = self;
        match build(warnings) {
            Some(value) if errors.is_empty() => Ok(value),
            _ => Err(errors.join("\n")),
        }
    }
}

/// An absolute http(s) URL.
pub(super) fn parse_url(variable: &str, value: &str) -> Result<Url, String> {
    match Url::parse(value.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
        _ => Err(format!(
            "{variable} is \"{value}\": give an absolute http(s) URL such as https://mail.example.com"
        )),
    }
}

/// The public URL; a plain-http one outside localhost is a warning (Microsoft refuses it).
pub(super) fn parse_public_url(value: &str, problems: &mut Problems) -> Option<PublicUrl> {
    let url = problems.take(parse_url(variables::PUBLIC_URL, value))?;
    let public = PublicUrl(url);
    if !public.accepted_by_microsoft() {
        problems.warn(format!(
            "{} is {value}: Microsoft accepts plain-http redirect URIs only for localhost; serve \
             the callback over https (for example behind your ingress)",
            variables::PUBLIC_URL
        ));
    }
    Some(public)
}

/// A listen address.
pub(super) fn parse_addr(variable: &str, value: &str) -> Result<SocketAddr, String> {
    value.trim().parse().map_err(|_| {
        format!("{variable} is \"{value}\": give an IP address and port such as 0.0.0.0:50051")
    })
}

pub(super) fn parse_log_format(value: &str) -> Result<LogFormat, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!(
            "{} is \"{value}\": use text or json",
            variables::LOG_FORMAT
        )),
    }
}

pub(super) fn parse_max_message_bytes(value: u64) -> Result<u64, String> {
    if value == 0 || value > MICROSOFT_MAX_MESSAGE_BYTES {
        Err(format!(
            "{} is {value}: give a size in bytes from 1 to {MICROSOFT_MAX_MESSAGE_BYTES} \
             (Microsoft's 150 MB limit)",
            variables::MAX_MESSAGE_BYTES
        ))
    } else {
        Ok(value)
    }
}

/// The database URL: given, or SQLite in the data directory.
pub(super) fn database_url(raw: &RawSettings, data_dir: &Path) -> DatabaseUrl {
    DatabaseUrl::new(raw.database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            data_dir.join("graph-mailer.db").display()
        )
    }))
}

/// Where the encryption key comes from: a value, a file, or a file generated on first start.
pub(super) fn key_source(raw: &RawSettings, data_dir: &Path, problems: &mut Problems) -> KeySource {
    match (&raw.encryption_key, &raw.encryption_key_file) {
        (Some(key), None) => KeySource::Value(key.clone()),
        (None, Some(file)) => KeySource::File(file.into()),
        (None, None) => KeySource::Generated(data_dir.join("encryption.key")),
        (Some(_), Some(_)) => {
            problems.error(format!(
                "set {ENCRYPTION_KEY} or {ENCRYPTION_KEY_FILE}, not both"
            ));
            KeySource::Generated(data_dir.join("encryption.key"))
        }
    }
}

/// Seconds as a signed count, for `chrono` durations.
pub(super) fn secs(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX / 1_000_000)
}

impl TokenSettings {
    /// The refresh engine's section. Nothing in it can be invalid: values below their floor are
    /// raised to it.
    pub(super) fn from_raw(raw: &RawSettings) -> Self {
        Self {
            refresh_margin: chrono::Duration::seconds(secs(raw.refresh_margin_seconds)),
            refresh_ahead: chrono::Duration::seconds(secs(
                raw.refresh_ahead_seconds.max(raw.refresh_margin_seconds),
            )),
            idle_refresh_after: chrono::Duration::days(secs(raw.refresh_idle_days.max(1))),
            check_interval: Duration::from_secs(raw.refresh_interval_seconds.max(1)),
        }
    }
}

impl GraphSettings {
    /// The Graph transport's section.
    pub(super) fn from_raw(raw: &RawSettings, problems: &mut Problems) -> Option<Self> {
        let mut valid = true;
        if raw.mailbox_concurrency == 0 {
            problems.error(format!(
                "{} must be at least 1",
                variables::MAILBOX_CONCURRENCY
            ));
            valid = false;
        }
        if raw.retry_max_attempts == 0 {
            problems.error(format!(
                "{} must be at least 1",
                variables::RETRY_MAX_ATTEMPTS
            ));
            valid = false;
        }
        valid.then(|| Self {
            request_timeout: Duration::from_secs(raw.graph_timeout_seconds.max(1)),
            connect_timeout: Duration::from_secs(raw.graph_connect_timeout_seconds.max(1)),
            retry_max_attempts: u32::try_from(raw.retry_max_attempts).unwrap_or(u32::MAX),
            retry_budget: Duration::from_secs(raw.retry_budget_seconds),
            mailbox_concurrency: usize::try_from(raw.mailbox_concurrency).unwrap_or(usize::MAX),
            concurrency_wait: Duration::from_secs(raw.concurrency_wait_seconds),
            reconcile_window: Duration::from_secs(raw.reconcile_seconds),
            blocked_pause: Duration::from_secs(raw.sending_blocked_pause_seconds.max(1)),
        })
    }
}

impl AccessSettings {
    /// Who may call. In graph mode a callers file is required unless running open is asked for
    /// explicitly; open graph mode is a warning, in the logs and in `check`.
    pub(super) fn from_raw(
        raw: &RawSettings,
        graph: bool,
        data_dir: &Path,
        problems: &mut Problems,
    ) -> Option<Self> {
        let callers_file = raw.callers_file.as_ref().map(PathBuf::from);
        match (&callers_file, graph, raw.allow_unauthenticated) {
            (None, true, false) => problems.error(format!(
                "{} is not set: in graph mode every caller must be named and limited to its \
                 mailboxes. Create one (graph-mailer new-key --name <caller> --role sender \
                 --mailbox <address> prints a key and its entry), or set {}=true to let anyone \
                 who reaches the gRPC port send as every connected mailbox",
                variables::CALLERS_FILE,
                variables::ALLOW_UNAUTHENTICATED
            )),
            (None, true, true) => problems.warn(format!(
                "{}=true: no callers file, so anyone who reaches the gRPC port may send as every \
                 connected mailbox, read Status and Connect or Disconnect mailboxes; set {}",
                variables::ALLOW_UNAUTHENTICATED,
                variables::CALLERS_FILE
            )),
            _ => {}
        }
        let allowed_mailboxes = raw
            .allowed_mailboxes
            .as_deref()
            .unwrap_or_default()
            .split([',', ' '])
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                MailboxPattern::parse(variables::ALLOWED_MAILBOXES, p).map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, String>>();
        let audit_log = match raw.audit_log.as_deref().map(str::trim) {
            None => AuditLogTarget::File(data_dir.join("audit.log")),
            Some("off") => AuditLogTarget::Off,
            Some("stdout") => AuditLogTarget::Stdout,
            Some(path) => AuditLogTarget::File(path.into()),
        };
        Some(Self {
            callers_file,
            allowed_mailboxes: problems.take(allowed_mailboxes)?,
            reflection: raw.reflection,
            audit_log,
        })
    }
}

impl TlsSettings {
    /// TLS when a certificate is configured: certificate and key go together.
    pub(super) fn from_raw(raw: &RawSettings, problems: &mut Problems) -> Option<Option<Self>> {
        match (&raw.tls_cert_file, &raw.tls_key_file) {
            (Some(cert), Some(key)) => Some(Some(Self {
                cert_file: cert.into(),
                key_file: key.into(),
                client_ca_file: raw.tls_client_ca_file.as_ref().map(PathBuf::from),
            })),
            (None, None) if raw.tls_client_ca_file.is_some() => {
                problems.error(format!(
                    "{} needs TLS: set {} and {} too",
                    variables::TLS_CLIENT_CA_FILE,
                    variables::TLS_CERT_FILE,
                    variables::TLS_KEY_FILE
                ));
                None
            }
            (None, None) => Some(None),
            _ => {
                problems.error(format!(
                    "set both {} and {}, or neither",
                    variables::TLS_CERT_FILE,
                    variables::TLS_KEY_FILE
                ));
                None
            }
        }
    }
}

impl LimitSettings {
    /// The admission limits; the byte budget must admit at least the largest message.
    pub(super) fn from_raw(raw: &RawSettings, problems: &mut Problems) -> Option<Self> {
        if raw.max_inflight_bytes < raw.max_message_bytes {
            problems.error(format!(
                "{} is {}, below {} ({}): the largest message could never be accepted",
                variables::MAX_INFLIGHT_BYTES,
                raw.max_inflight_bytes,
                variables::MAX_MESSAGE_BYTES,
                raw.max_message_bytes
            ));
            return None;
        }
        Some(Self {
            max_inflight_bytes: raw.max_inflight_bytes.min(u64::from(u32::MAX)),
            rpc_timeout: Duration::from_secs(raw.rpc_timeout_seconds.max(1)),
            max_streams_per_connection: u32::try_from(raw.max_streams_per_connection.max(1))
                .unwrap_or(u32::MAX),
        })
    }
}

/// An optional listen address.
pub(super) fn parse_optional_addr(
    variable: &str,
    value: Option<&str>,
) -> Result<Option<SocketAddr>, String> {
    value.map(|v| parse_addr(variable, v)).transpose()
}
