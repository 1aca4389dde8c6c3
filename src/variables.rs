//! Every environment variable graph-mailer reads, named once.
//!
//! Messages, `--help`, `describe()` and the README's configuration table all take the names
//! (and the table its defaults and meanings) from here; a test keeps the README's table equal
//! to [`markdown_table`], and another keeps this list equal to the fields of
//! [`super::RawSettings`].

/// The prefix of every environment variable graph-mailer reads.
pub const ENV_PREFIX: &str = "GRAPH_MAILER_";

/// One variable: its name, its default as the README shows it, and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variable {
    pub name: &'static str,
    /// Markdown; `–` when unset by default.
    pub default: &'static str,
    /// Markdown.
    pub meaning: &'static str,
}

impl Variable {
    /// The key in the TOML file and in [`super::RawSettings`]: the name without the prefix, in
    /// lower case.
    pub fn key(&self) -> String {
        self.name
            .strip_prefix(ENV_PREFIX)
            .unwrap_or(self.name)
            .to_ascii_lowercase()
    }
}

macro_rules! variables {
    ($($constant:ident, $default:literal, $meaning:literal;)+) => {
        $(
            #[doc = $meaning]
            pub const $constant: &str = concat!("GRAPH_MAILER_", stringify!($constant));
        )+
        /// Every variable, in the order the README lists them.
        pub const ALL: &[Variable] = &[
            $(Variable { name: $constant, default: $default, meaning: $meaning },)+
        ];
    };
}

variables! {
    TENANT_ID, "–", "Directory (tenant) ID GUID, or a verified domain. Unset: sandbox";
    CLIENT_ID, "–", "Application (client) ID GUID";
    CLIENT_SECRET, "–", "the client secret's Value";
    CLIENT_SECRET_FILE, "–", "a file holding it instead; re-read when it changes, on SIGHUP, and when Microsoft rejects the secret";
    CLIENT_SECRET_EXPIRES_AT, "–", "the secret's expiry, RFC 3339 date (`2027-05-31`) or date-time";
    CLIENT_SECRET_WARNING_DAYS, "`30`", "warn this many days before the secret expires";
    SECRET_RELOAD_SECONDS, "`10`", "how often the files graph-mailer watches (client secret, callers, TLS certificate) are checked";
    PUBLIC_URL, "`http://localhost:8080`", "the service's public base URL; redirect URI = it + `/oauth2/callback`";
    AUTHORITY_URL, "`https://login.microsoftonline.com`", "Microsoft identity platform";
    GRAPH_URL, "`https://graph.microsoft.com`", "Microsoft Graph";
    GRAPH_SCOPES, "`Mail.Send`", "delegated Graph permissions asked for; add `Mail.ReadWrite` for attachments of 3 MB or more";
    GRPC_ADDR, "`0.0.0.0:50051`", "gRPC listen address";
    HTTP_ADDR, "`0.0.0.0:8080`", "HTTP listen address: OAuth callback, `/healthz`, `/readyz`, `/metrics`";
    HEALTH_ADDR, "`0.0.0.0:8081` with TLS, else –", "a plaintext listener serving only health (gRPC health, `/healthz`, `/readyz`), for probes that cannot speak TLS";
    METRICS_ADDR, "–", "serve `/metrics` on this listener instead of the HTTP one";
    CALLERS_FILE, "–", "the callers file (TOML): each caller's key hash or certificate, role and mailboxes; required in graph mode; re-read when it changes and on SIGHUP";
    ALLOW_UNAUTHENTICATED, "`false`", "`true` lets graph mode run without a callers file: anyone who reaches the gRPC port may send as every mailbox";
    ALLOWED_MAILBOXES, "–", "the only mailboxes Connect accepts (addresses or `*@domain`, comma-separated), whoever asks";
    REFLECTION, "`true`", "serve gRPC reflection (grpcurl)";
    ADMIN_PAGE, "`true`", "serve the admin page, `/admin`, on the HTTP listener";
    ADMINS, "–", "who may sign in to the admin page with Microsoft: sign-in names (UPN) or object ids of the tenant's accounts, comma-separated";
    ADMIN_KEY_SIGN_IN, "`false` (`true` in the sandbox)", "`true` lets an admin caller's key sign in to the admin page too";
    ADMIN_SESSION_MINUTES, "`480`", "how long a sign-in to the admin page lasts";
    TLS_CERT_FILE, "–", "PEM certificate chain: both listeners serve TLS (HTTP/2 and HTTP/1.1); a renewed file is picked up without a restart";
    TLS_KEY_FILE, "–", "PEM private key of that certificate";
    TLS_CLIENT_CA_FILE, "–", "PEM CA certificates: gRPC callers must present a client certificate they signed (mTLS)";
    AUDIT_LOG, "`DATA_DIR/audit.log`", "`stdout`, `off`, or a file: one JSON line per Connect, callback, Disconnect, refused call, callers-file reload and admin-page sign-in or action";
    MAX_INFLIGHT_BYTES, "`314572800` (300 MB)", "request bytes all calls together may hold (calls beyond get `RESOURCE_EXHAUSTED`); the outbox's workers hold at most as much again";
    RPC_TIMEOUT_SECONDS, "`300`", "longest time one call may take";
    MAX_STREAMS_PER_CONNECTION, "`100`", "concurrent calls per client connection";
    DATA_DIR, "`./data`", "SQLite file, generated encryption key, sandbox `.eml` files";
    DATABASE_URL, "`sqlite://DATA_DIR/graph-mailer.db?mode=rwc`", "or `postgres://user:password@host/db` for several replicas";
    ENCRYPTION_KEY, "–", "32 bytes, base64 (`openssl rand -base64 32`) or hex; encrypts stored tokens (AES-256-GCM)";
    ENCRYPTION_KEY_FILE, "–", "a file holding it. Neither set: generated into `DATA_DIR/encryption.key` (mode 0600) on first start";
    TRANSPORT, "`graph` with a tenant, else `sandbox`", "force `sandbox` (or `graph`)";
    LOG_FORMAT, "`text`", "`text` or `json` (one object per line)";
    MAX_MESSAGE_BYTES, "`157286400` (150 MB)", "largest message, attachments included";
    REFRESH_MARGIN_SECONDS, "`300`", "a token closer to expiry is refreshed before use";
    REFRESH_AHEAD_SECONDS, "`900`", "the background task refreshes tokens this long before expiry";
    REFRESH_IDLE_DAYS, "`7`", "connections not refreshed for this long are refreshed anyway";
    REFRESH_INTERVAL_SECONDS, "`60`", "how often the background task looks";
    GRAPH_TIMEOUT_SECONDS, "`120`", "per Graph request";
    GRAPH_CONNECT_TIMEOUT_SECONDS, "`10`", "per connection";
    RETRY_MAX_ATTEMPTS, "`4`", "attempts per Graph request, the first included";
    RETRY_BUDGET_SECONDS, "`60`", "total time a send may spend retrying";
    MAILBOX_CONCURRENCY, "`4`", "Graph requests in flight per mailbox";
    CONCURRENCY_WAIT_SECONDS, "`30`", "how long a send waits for one of those places";
    RECONCILE_SECONDS, "`30`", "after an ambiguous answer to a send, how long the service looks for the message in Sent Items (needs `Mail.ReadBasic`, `Mail.Read` or `Mail.ReadWrite`) before answering that the outcome is unknown";
    SENDING_BLOCKED_PAUSE_SECONDS, "`3600`", "how long a mailbox's sends are held back after Exchange stopped it sending (`ErrorExceededMessageLimit`, `ErrorMessageSubmissionBlocked`)";
    LIMIT_MESSAGES_PER_MINUTE, "`30`", "outbox: messages a mailbox sends per minute (Exchange Online's limit), shared by all replicas";
    LIMIT_RECIPIENTS_PER_DAY, "`10000`", "outbox: recipients a mailbox sends to in a rolling 24 hours";
    LIMIT_REQUESTS_PER_10_MINUTES, "`10000`", "outbox: Graph requests per mailbox in 10 minutes (Outlook's limit)";
    LIMIT_UPLOAD_BYTES_PER_5_MINUTES, "`157286400`", "outbox: attachment bytes uploaded per mailbox in 5 minutes (Outlook's 150 MB)";
    LIMIT_EXTERNAL_RECIPIENTS_PER_DAY, "–", "outbox: recipients outside the mailbox's domain in a rolling 24 hours; unset: no limit";
    OUTBOX_MAX_AGE_SECONDS, "`86400`", "outbox: a message not sent this long after it was queued is FAILED with its last error";
    OUTBOX_RETENTION_SECONDS, "`604800`", "outbox: how long the status of a finished message (and its events) is kept; bodies go when it finishes";
    OUTBOX_WORKERS, "`32`", "outbox: Graph sends one replica makes at once (messages waiting for their slot hold none)";
    OUTBOX_LEASE_SECONDS, "`60`", "outbox: how long a replica's claim on a message lasts unless renewed; a stopped replica's messages are picked up after it";
    OUTBOX_RETRY_BASE_SECONDS, "`30`", "outbox: the first retry after a transient failure; doubled each time (full jitter) up to an hour";
    SHUTDOWN_DRAIN_SECONDS, "`30`", "how long in-flight calls may finish after SIGTERM";
    HEALTH_INTERVAL_SECONDS, "`5`", "how often the store is pinged for readiness";
    CONFIG, "–", "the TOML file (same as `--config`)";
}

/// Variables with the prefix that are read before the settings are (the TOML file's path).
pub const NOT_SETTINGS: &[&str] = &[CONFIG];

/// The log filter, read by the logging set-up rather than the settings.
const RUST_LOG: Variable = Variable {
    name: "RUST_LOG",
    default: "`info`",
    meaning: "log filter, e.g. `info,graph_mailer=debug`",
};

/// The README's configuration table.
pub fn markdown_table() -> String {
    let mut table = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for variable in ALL.iter().chain([&RUST_LOG]) {
        table.push_str(&format!(
            "| `{}` | {} | {} |\n",
            variable.name, variable.default, variable.meaning
        ));
    }
    table
}

/// The settings part of `--help`: every variable and its meaning, without Markdown.
pub fn help_text() -> String {
    let width = ALL.iter().map(|v| v.name.len()).max().unwrap_or(0);
    let mut text = String::from(
        "Settings come from GRAPH_MAILER_* environment variables, optionally from a TOML file\n\
         (--config; keys are the variable names without the prefix, in lower case), the \
         environment\nwinning. Defaults and details are in the README.\n\n",
    );
    for variable in ALL.iter().chain([&RUST_LOG]) {
        text.push_str(&format!(
            "  {:<width$}  {}\n",
            variable.name,
            variable.meaning.replace('`', "")
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::RawSettings;

    #[test]
    fn every_raw_setting_has_exactly_one_variable_and_its_documented_default() {
        let defaults = match serde_json::to_value(RawSettings::default()) {
            Ok(serde_json::Value::Object(map)) => map,
            other => panic!("{other:?}"),
        };
        let mut keys: Vec<String> = ALL
            .iter()
            .filter(|v| !NOT_SETTINGS.contains(&v.name))
            .map(Variable::key)
            .collect();
        keys.sort();
        let mut fields: Vec<String> = defaults.keys().cloned().collect();
        fields.extend(["client_secret".into(), "encryption_key".into()]);
        fields.sort();
        assert_eq!(keys, fields);
        for variable in ALL {
            let Some(value) = defaults.get(&variable.key()) else {
                continue;
            };
            let shown = match value {
                serde_json::Value::Null => continue,
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            assert!(
                variable.default.starts_with(&format!("`{shown}`")),
                "{}: documented default {} but it is {shown}",
                variable.name,
                variable.default
            );
        }
    }
}
