//! The client secret, rotatable without a restart.
//!
//! With `GRAPH_MAILER_CLIENT_SECRET_FILE` the file is checked for changes every few seconds
//! (polling survives Kubernetes' atomic symlink swaps of mounted Secrets, where file watches
//! lose track), on SIGHUP, and once more whenever Microsoft rejects the secret, so a rotated
//! secret is in use for the next token request.

use std::{path::PathBuf, sync::RwLock, time::Duration};

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::{
    periodic::{WatchReason, spawn_file_watcher},
    settings::{ClientSecretSource, secret_id_warning},
    variables::{CLIENT_SECRET, CLIENT_SECRET_EXPIRES_AT, CLIENT_SECRET_FILE},
};

/// What to do when the client secret has expired: the one place this advice is written.
pub fn rotate_expired_secret() -> String {
    format!(
        "create a new one under \"Certificates & secrets\" and update {CLIENT_SECRET} (or the \
         file) and {CLIENT_SECRET_EXPIRES_AT}"
    )
}

/// Whole days until `at`, rounded up: a secret expiring in 9 days and 23 hours has 10 left.
pub fn days_until(at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    ((at - now).num_seconds() + 86_399).div_euclid(86_400)
}

/// The client secret's expiry as configured, for Status, `check` and warnings.
#[derive(Debug, Clone, Copy)]
pub struct SecretExpiry {
    pub expires_at: Option<DateTime<Utc>>,
    /// Warnings start this long before.
    pub warning: chrono::Duration,
}

impl SecretExpiry {
    /// A sentence when the secret expires soon or expired, `None` otherwise.
    pub fn warning(&self, now: DateTime<Utc>) -> Option<String> {
        let expires_at = self.expires_at?;
        let days = days_until(expires_at, now);
        if expires_at <= now {
            Some(format!(
                "the client secret expired on {}: token requests fail with AADSTS7000222; {}",
                expires_at.format("%Y-%m-%d"),
                rotate_expired_secret()
            ))
        } else if expires_at - now <= self.warning {
            Some(format!(
                "the client secret expires on {} (in {days} days): create a new secret under \
                 \"Certificates & secrets\" and rotate it before then",
                expires_at.format("%Y-%m-%d")
            ))
        } else {
            None
        }
    }

    /// Whether the secret has expired.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// The current client secret.
#[derive(Debug)]
pub struct ClientSecretProvider {
    file: Option<PathBuf>,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    secret: SecretString,
    fingerprint: [u8; 32],
}

impl ClientSecretProvider {
    /// Reads the secret once; a missing or empty file is an error.
    pub fn load(source: &ClientSecretSource) -> Result<Self, String> {
        match source {
            ClientSecretSource::Value(secret) => Ok(Self {
                file: None,
                current: RwLock::new(Loaded::new(secret.clone())),
            }),
            ClientSecretSource::File(path) => Ok(Self {
                current: RwLock::new(Loaded::new(read_secret_file(path)?)),
                file: Some(path.clone()),
            }),
        }
    }

    /// The secret to use for the next token request.
    pub fn current(&self) -> SecretString {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .secret
            .clone()
    }

    /// Re-reads the file. Returns whether the secret changed; a fixed value never does.
    pub fn reload(&self) -> Result<bool, String> {
        let Some(path) = &self.file else {
            return Ok(false);
        };
        let fresh = Loaded::new(read_secret_file(path)?);
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.fingerprint == fresh.fingerprint {
            return Ok(false);
        }
        if crate::settings::azure::is_guid(fresh.secret.expose_secret().trim()) {
            tracing::warn!("{}", secret_id_warning(CLIENT_SECRET_FILE));
        }
        *current = fresh;
        tracing::info!(file = %path.display(), "client secret file changed; using the new secret");
        Ok(true)
    }

    /// Re-reads the file every `interval` and on SIGHUP until `shutdown`.
    pub fn spawn_watcher(
        self: std::sync::Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.file.as_ref()?;
        Some(spawn_file_watcher(interval, shutdown, move |reason| {
            if reason == WatchReason::Hangup {
                tracing::info!("SIGHUP: re-reading the client secret");
            }
            if let Err(error) = self.reload() {
                tracing::error!(
                    %error,
                    "cannot re-read the client secret file; keeping the current secret"
                );
            }
        }))
    }
}

impl Loaded {
    fn new(secret: SecretString) -> Self {
        let fingerprint = Sha256::digest(secret.expose_secret().as_bytes()).into();
        Self {
            secret,
            fingerprint,
        }
    }
}

fn read_secret_file(path: &PathBuf) -> Result<SecretString, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{CLIENT_SECRET_FILE} {}: cannot read it: {e}",
            path.display()
        )
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!(
            "{CLIENT_SECRET_FILE} {} is empty: put the client secret's Value in it",
            path.display()
        ));
    }
    Ok(SecretString::from(secret.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_picked_up_and_an_unchanged_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "first~secret\n").unwrap();
        let provider = ClientSecretProvider::load(&ClientSecretSource::File(path.clone())).unwrap();
        assert_eq!(provider.current().expose_secret(), "first~secret");
        assert!(!provider.reload().unwrap());
        std::fs::write(&path, "second~secret").unwrap();
        assert!(provider.reload().unwrap());
        assert_eq!(provider.current().expose_secret(), "second~secret");
    }

    #[test]
    fn an_empty_or_missing_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        assert!(ClientSecretProvider::load(&ClientSecretSource::File(path.clone())).is_err());
        std::fs::write(&path, "  \n").unwrap();
        let error = ClientSecretProvider::load(&ClientSecretSource::File(path)).unwrap_err();
        assert!(error.contains("is empty"), "{error}");
    }
}
