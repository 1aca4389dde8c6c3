//! The settings as a person writes them: defaults, then an optional TOML file, then
//! `GRAPH_MAILER_*` environment variables, the environment winning.
//!
//! Environment values are taken as strings (numbers are read from them only where a number is
//! expected), so a client secret made of digits or containing `[` stays the string it is.

use std::{collections::BTreeMap, path::Path};

use figment::{
    Figment,
    providers::{Format, Serialized, Toml},
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::variables::{self, ENV_PREFIX};

/// Every setting, unvalidated. Field names are the environment variable names without the
/// prefix, in lower case, and the keys of the TOML file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawSettings {
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    #[serde(skip_serializing)]
    pub client_secret: Option<SecretString>,
    pub client_secret_file: Option<String>,
    pub client_secret_expires_at: Option<String>,
    pub client_secret_warning_days: u64,
    pub secret_reload_seconds: u64,
    pub public_url: String,
    pub authority_url: String,
    pub graph_url: String,
    pub graph_scopes: String,
    pub grpc_addr: String,
    pub http_addr: String,
    pub health_addr: Option<String>,
    pub metrics_addr: Option<String>,
    pub callers_file: Option<String>,
    pub allow_unauthenticated: bool,
    pub allowed_mailboxes: Option<String>,
    pub reflection: bool,
    pub admin_page: bool,
    pub admins: Option<String>,
    pub admin_key_sign_in: bool,
    pub admin_session_minutes: u64,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    pub tls_client_ca_file: Option<String>,
    pub audit_log: Option<String>,
    pub max_inflight_bytes: u64,
    pub rpc_timeout_seconds: u64,
    pub max_streams_per_connection: u64,
    pub data_dir: String,
    pub database_url: Option<String>,
    #[serde(skip_serializing)]
    pub encryption_key: Option<SecretString>,
    pub encryption_key_file: Option<String>,
    pub transport: Option<String>,
    pub log_format: String,
    pub max_message_bytes: u64,
    pub refresh_margin_seconds: u64,
    pub refresh_ahead_seconds: u64,
    pub refresh_idle_days: u64,
    pub refresh_interval_seconds: u64,
    pub graph_timeout_seconds: u64,
    pub graph_connect_timeout_seconds: u64,
    pub retry_max_attempts: u64,
    pub retry_budget_seconds: u64,
    pub mailbox_concurrency: u64,
    pub concurrency_wait_seconds: u64,
    pub reconcile_seconds: u64,
    pub sending_blocked_pause_seconds: u64,
    pub limit_messages_per_minute: u64,
    pub limit_recipients_per_day: u64,
    pub limit_requests_per_10_minutes: u64,
    pub limit_upload_bytes_per_5_minutes: u64,
    pub limit_external_recipients_per_day: Option<u64>,
    pub outbox_max_age_seconds: u64,
    pub outbox_retention_seconds: u64,
    pub outbox_workers: u64,
    pub outbox_lease_seconds: u64,
    pub outbox_retry_base_seconds: u64,
    pub shutdown_drain_seconds: u64,
    pub health_interval_seconds: u64,
}

impl Default for RawSettings {
    fn default() -> Self {
        Self {
            tenant_id: None,
            client_id: None,
            client_secret: None,
            client_secret_file: None,
            client_secret_expires_at: None,
            client_secret_warning_days: 30,
            secret_reload_seconds: 10,
            public_url: "http://localhost:8080".into(),
            authority_url: "https://login.microsoftonline.com".into(),
            graph_url: "https://graph.microsoft.com".into(),
            graph_scopes: "Mail.Send".into(),
            grpc_addr: "0.0.0.0:50051".into(),
            http_addr: "0.0.0.0:8080".into(),
            health_addr: None,
            metrics_addr: None,
            callers_file: None,
            allow_unauthenticated: false,
            allowed_mailboxes: None,
            reflection: true,
            admin_page: true,
            admins: None,
            admin_key_sign_in: false,
            admin_session_minutes: 480,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            audit_log: None,
            max_inflight_bytes: 300 * 1024 * 1024,
            rpc_timeout_seconds: 300,
            max_streams_per_connection: 100,
            data_dir: "./data".into(),
            database_url: None,
            encryption_key: None,
            encryption_key_file: None,
            transport: None,
            log_format: "text".into(),
            max_message_bytes: 150 * 1024 * 1024,
            refresh_margin_seconds: 300,
            refresh_ahead_seconds: 900,
            refresh_idle_days: 7,
            refresh_interval_seconds: 60,
            graph_timeout_seconds: 120,
            graph_connect_timeout_seconds: 10,
            retry_max_attempts: 4,
            retry_budget_seconds: 60,
            mailbox_concurrency: 4,
            concurrency_wait_seconds: 30,
            reconcile_seconds: 30,
            sending_blocked_pause_seconds: 3600,
            limit_messages_per_minute: 30,
            limit_recipients_per_day: 10_000,
            limit_requests_per_10_minutes: 10_000,
            limit_upload_bytes_per_5_minutes: 157_286_400,
            limit_external_recipients_per_day: None,
            outbox_max_age_seconds: 86_400,
            outbox_retention_seconds: 604_800,
            outbox_workers: 32,
            outbox_lease_seconds: 60,
            outbox_retry_base_seconds: 30,
            shutdown_drain_seconds: 30,
            health_interval_seconds: 5,
        }
    }
}

/// What loading produced besides the settings: variables that look like typos.
#[derive(Debug, Default)]
pub struct LoadNotes {
    pub unknown_variables: Vec<String>,
}

/// Reads the layers. `env` is the process environment (passed in so tests need not touch it).
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(RawSettings, LoadNotes), String> {
    let mut figment = Figment::from(Serialized::defaults(RawSettings::default()));
    if let Some(file) = file {
        if !file.is_file() {
            return Err(format!(
                "--config {}: no such file; pass the path of a TOML file or leave --config out",
                file.display()
            ));
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    let known = known_keys();
    let mut notes = LoadNotes::default();
    let mut from_env = BTreeMap::new();
    for (name, value) in env {
        let Some(key) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if variables::NOT_SETTINGS.contains(&name.as_str()) || key.starts_with("TEST_") {
            continue;
        }
        let key = key.to_ascii_lowercase();
        if !known.contains(&key) {
            notes.unknown_variables.push(name);
            continue;
        }
        // An empty variable means "not set", as in most shells' `VAR=` idiom.
        if !value.trim().is_empty() {
            from_env.insert(key, value.trim().to_owned());
        }
    }
    figment = figment.merge(Serialized::defaults(from_env));
    let raw = figment
        .extract_lossy::<RawSettings>()
        .map_err(describe_error)?;
    Ok((raw, notes))
}

/// Every environment variable graph-mailer reads, with its prefix.
pub fn known_variables() -> Vec<String> {
    variables::ALL.iter().map(|v| v.name.to_owned()).collect()
}

fn known_keys() -> Vec<String> {
    variables::ALL
        .iter()
        .filter(|v| !variables::NOT_SETTINGS.contains(&v.name))
        .map(variables::Variable::key)
        .collect()
}

fn describe_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let variable = format!("{ENV_PREFIX}{}", e.path.join("_").to_ascii_uppercase());
            format!("{variable}: {}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let (raw, notes) = load(None, env(&[])).unwrap();
        assert_eq!(raw.grpc_addr, "0.0.0.0:50051");
        assert_eq!(raw.max_message_bytes, 150 * 1024 * 1024);
        assert!(notes.unknown_variables.is_empty());
    }

    #[test]
    fn a_secret_made_of_digits_or_brackets_stays_a_string() {
        let (raw, _) = load(
            None,
            env(&[
                ("GRAPH_MAILER_CLIENT_SECRET", "12345"),
                ("GRAPH_MAILER_TENANT_ID", "[x]"),
            ]),
        )
        .unwrap();
        assert_eq!(raw.client_secret.unwrap().expose_secret(), "12345");
        assert_eq!(raw.tenant_id.as_deref(), Some("[x]"));
    }

    #[test]
    fn numbers_are_read_from_environment_strings() {
        let (raw, _) = load(None, env(&[("GRAPH_MAILER_MAX_MESSAGE_BYTES", "1000")])).unwrap();
        assert_eq!(raw.max_message_bytes, 1000);
    }

    #[test]
    fn a_bad_number_names_the_variable() {
        let error = load(None, env(&[("GRAPH_MAILER_MAX_MESSAGE_BYTES", "lots")])).unwrap_err();
        assert!(error.contains("GRAPH_MAILER_MAX_MESSAGE_BYTES"), "{error}");
    }

    #[test]
    fn environment_wins_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("graph-mailer.toml");
        std::fs::write(
            &file,
            "grpc_addr = \"127.0.0.1:1\"\nhttp_addr = \"127.0.0.1:2\"\n",
        )
        .unwrap();
        let (raw, _) = load(
            Some(&file),
            env(&[("GRAPH_MAILER_GRPC_ADDR", "127.0.0.1:3")]),
        )
        .unwrap();
        assert_eq!(raw.grpc_addr, "127.0.0.1:3");
        assert_eq!(raw.http_addr, "127.0.0.1:2");
    }

    #[test]
    fn a_misspelt_variable_is_reported_and_empty_ones_are_unset() {
        let (raw, notes) = load(
            None,
            env(&[
                ("GRAPH_MAILER_TENNANT_ID", "x"),
                ("GRAPH_MAILER_TENANT_ID", ""),
                ("GRAPH_MAILER_TEST_POSTGRES_URL", "postgres://"),
            ]),
        )
        .unwrap();
        assert_eq!(notes.unknown_variables, vec!["GRAPH_MAILER_TENNANT_ID"]);
        assert_eq!(raw.tenant_id, None);
    }
}
