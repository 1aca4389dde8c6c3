//! The callers in force: the callers file as last read, re-read when it changes and on SIGHUP.
//! A file with a problem leaves the previous callers in force and says why.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{Caller, Callers, Credentials, Refusal, file, rate};
use crate::{
    audit::{AuditEvent, AuditLog, AuditRecord},
    periodic::{WatchReason, spawn_file_watcher},
    variables,
};

/// The callers in force.
pub struct CallerRegistry {
    file: Option<PathBuf>,
    current: RwLock<Loaded>,
    rates: rate::RateLimits,
    audit: Arc<AuditLog>,
}

struct Loaded {
    callers: Arc<Callers>,
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for CallerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerRegistry")
            .field("file", &self.file)
            .field("callers", &self.callers().len())
            .finish()
    }
}

impl CallerRegistry {
    /// No callers file: every call is the anonymous caller's.
    pub fn open(audit: Arc<AuditLog>) -> Self {
        Self {
            file: None,
            current: RwLock::new(Loaded {
                callers: Arc::default(),
                fingerprint: [0; 32],
            }),
            rates: rate::RateLimits::default(),
            audit,
        }
    }

    /// Reads the callers file; at start-up a problem in it is an error.
    pub fn load(path: PathBuf, audit: Arc<AuditLog>) -> Result<Self, String> {
        let (callers, fingerprint) = read(&path)?;
        tracing::info!(callers = callers.len(), file = %path.display(), "callers file loaded");
        Ok(Self {
            file: Some(path),
            current: RwLock::new(Loaded {
                callers: Arc::new(callers),
                fingerprint,
            }),
            rates: rate::RateLimits::default(),
            audit,
        })
    }

    /// Whether every call must name a caller.
    pub fn is_enforced(&self) -> bool {
        self.file.is_some()
    }

    /// The callers in force now.
    pub fn callers(&self) -> Arc<Callers> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .callers
            .clone()
    }

    /// Who is calling, and whether its rate allows the call.
    pub fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Arc<Caller>, Refusal> {
        if !self.is_enforced() {
            return Ok(Arc::new(Caller::anonymous()));
        }
        let callers = self.callers();
        let by_key = match credentials.authorization {
            Some(value) => Some(
                bearer(value)
                    .and_then(|key| callers.by_key(key))
                    .ok_or(Refusal::UnknownKey)?,
            ),
            None => None,
        };
        let by_certificate = callers.by_certificate_names(&credentials.certificate_names);
        let caller = match (by_key, by_certificate) {
            (Some(key), Some(cert)) if key.name != cert.name => {
                return Err(Refusal::Conflicting {
                    key: key.name.clone(),
                    certificate: cert.name.clone(),
                });
            }
            (Some(caller), _) | (None, Some(caller)) => caller,
            (None, None) => return Err(Refusal::MissingKey),
        };
        if let Some(per_minute) = caller.max_per_minute {
            self.rates
                .take(&caller.name, per_minute, Instant::now())
                .map_err(|retry_after| Refusal::RateLimited {
                    caller: caller.name.clone(),
                    per_minute,
                    retry_after,
                })?;
        }
        Ok(caller)
    }

    /// Re-reads the file. An unchanged file does nothing; a file with a problem keeps the
    /// previous callers and says why (in the log and the audit log).
    pub fn reload(&self) {
        let Some(path) = &self.file else { return };
        match read(path) {
            Ok((callers, fingerprint)) => {
                let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
                if current.fingerprint == fingerprint {
                    return;
                }
                let count = callers.len();
                *current = Loaded {
                    callers: Arc::new(callers),
                    fingerprint,
                };
                drop(current);
                tracing::info!(
                    callers = count,
                    "callers file changed; new callers in force"
                );
                self.audit.record(
                    AuditRecord::new(AuditEvent::CallersReload, "loaded")
                        .detail(format!("{count} callers")),
                );
            }
            Err(problem) => {
                let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
                let fingerprint = file_fingerprint(path);
                if fingerprint == Some(current.fingerprint) {
                    return;
                }
                // Report a broken version once, not at every poll.
                if let Some(fingerprint) = fingerprint {
                    current.fingerprint = fingerprint;
                }
                drop(current);
                tracing::error!(
                    problem,
                    "the callers file has a problem; the previous callers stay in force"
                );
                self.audit.record(
                    AuditRecord::new(AuditEvent::CallersReload, "kept_previous").detail(problem),
                );
            }
        }
    }

    /// Re-reads the file every `interval` and on SIGHUP until `stop`.
    pub fn spawn_watcher(
        self: Arc<Self>,
        interval: Duration,
        stop: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.file.as_ref()?;
        Some(spawn_file_watcher(interval, stop, move |reason| {
            if reason == WatchReason::Hangup {
                tracing::info!("SIGHUP: re-reading the callers file");
            }
            self.reload();
        }))
    }
}

/// The key of an `authorization: Bearer <key>` value.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, key) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

fn read(path: &PathBuf) -> Result<(Callers, [u8; 32]), String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{} {}: cannot read it: {e}",
            variables::CALLERS_FILE,
            path.display()
        )
    })?;
    let fingerprint = Sha256::digest(text.as_bytes()).into();
    let callers = file::parse(&text)
        .map_err(|e| format!("{} {}: {e}", variables::CALLERS_FILE, path.display()))?;
    Ok((callers, fingerprint))
}

fn file_fingerprint(path: &PathBuf) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|bytes| Sha256::digest(&bytes).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callers::{ANONYMOUS, key};

    fn registry(text: &str) -> (CallerRegistry, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("callers.toml");
        std::fs::write(&path, text).unwrap();
        let registry = CallerRegistry::load(path, Arc::new(AuditLog::off())).unwrap();
        (registry, dir)
    }

    fn entry(name: &str, key: &str, extra: &str) -> String {
        format!(
            "[[caller]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\nrole = \"sender\"\nmailboxes = [\"noreply@contoso.com\"]\n{extra}\n",
            key::hex(&key::digest(key))
        )
    }

    fn with_key(key: &str) -> Credentials<'_> {
        Credentials {
            authorization: Some(key),
            certificate_names: Vec::new(),
        }
    }

    #[test]
    fn a_known_key_names_its_caller_and_anything_else_is_refused() {
        let (registry, _dir) = registry(&entry("billing", "gm_right", ""));
        let caller = registry.authenticate(&with_key("Bearer gm_right")).unwrap();
        assert_eq!(caller.name, "billing");
        assert_eq!(
            registry.authenticate(&with_key("Bearer gm_wrong")),
            Err(Refusal::UnknownKey)
        );
        assert_eq!(
            registry.authenticate(&with_key("gm_right")),
            Err(Refusal::UnknownKey)
        );
        assert_eq!(
            registry.authenticate(&Credentials::default()),
            Err(Refusal::MissingKey)
        );
    }

    #[test]
    fn a_caller_over_its_rate_is_refused_with_the_wait() {
        let (registry, _dir) = registry(&entry("billing", "gm_right", "max_per_minute = 2"));
        for _ in 0..2 {
            registry.authenticate(&with_key("Bearer gm_right")).unwrap();
        }
        match registry.authenticate(&with_key("Bearer gm_right")) {
            Err(Refusal::RateLimited { retry_after, .. }) => {
                assert!(retry_after > Duration::from_secs(25))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_broken_file_keeps_the_previous_callers() {
        let (registry, dir) = registry(&entry("billing", "gm_right", ""));
        let path = dir.path().join("callers.toml");
        std::fs::write(&path, "[[caller]]\nname = \"broken").unwrap();
        registry.reload();
        assert!(registry.authenticate(&with_key("Bearer gm_right")).is_ok());
        std::fs::write(&path, entry("ops", "gm_new", "")).unwrap();
        registry.reload();
        assert_eq!(
            registry.authenticate(&with_key("Bearer gm_right")),
            Err(Refusal::UnknownKey)
        );
        assert_eq!(
            registry
                .authenticate(&with_key("Bearer gm_new"))
                .unwrap()
                .name,
            "ops"
        );
    }

    #[test]
    fn without_a_file_everyone_is_the_anonymous_admin() {
        let registry = CallerRegistry::open(Arc::new(AuditLog::off()));
        let caller = registry.authenticate(&Credentials::default()).unwrap();
        assert_eq!(caller.name, ANONYMOUS);
        assert!(caller.is_admin());
    }
}
