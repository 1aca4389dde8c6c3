//! The audit log: one JSON line per Connect, callback outcome, Disconnect, refused call and
//! callers-file reload, naming the caller, the mailbox and the outcome. Never a key, token or
//! authorization code: events are built from names and outcomes only.
//!
//! It is kept apart from the service's logs (which name mailboxes only by domain) because an
//! audit trail must say which mailbox; by default it is a file in the data directory.
//! Refused calls are rate-limited: a flood of unauthenticated calls writes at most
//! [`REFUSALS_PER_SECOND`] lines a second and then one line saying how many were left out.

use std::{
    fs::OpenOptions,
    io::{self, Write},
    sync::Mutex,
    time::Instant,
};

use chrono::{SecondsFormat, Utc};
use serde::Serialize;

use crate::settings::AuditLogTarget;

/// Refused calls written per second; the rest are counted.
pub const REFUSALS_PER_SECOND: u32 = 20;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    /// A sign-in link was asked for.
    Connect,
    /// The mailbox owner came back from Microsoft.
    Callback,
    Disconnect,
    /// A call was refused: no or unknown key, or a right the caller lacks.
    Refused,
    /// The callers file was read again.
    CallersReload,
    /// Refused calls left out of the log in the last second.
    RefusalsSuppressed,
    /// Someone signed in to the admin page (or was refused).
    AdminSignIn,
    AdminSignOut,
    /// A test mail sent from the admin page.
    TestMail,
    /// A queued message or batch cancelled from the admin page.
    Cancel,
    /// `check` run from the admin page.
    Checks,
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord<'a> {
    pub event: AuditEvent,
    /// The caller's name from the callers file; absent when none could be identified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc: Option<&'a str>,
    /// `ok`, `refused`, `failed`, `unauthenticated`, `permission_denied`, `kept_previous` …
    pub outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl<'a> AuditRecord<'a> {
    pub fn new(event: AuditEvent, outcome: &'a str) -> Self {
        Self {
            event,
            caller: None,
            mailbox: None,
            rpc: None,
            outcome,
            detail: None,
        }
    }

    pub fn caller(mut self, caller: &'a str) -> Self {
        self.caller = Some(caller);
        self
    }

    pub fn mailbox(mut self, mailbox: &'a str) -> Self {
        self.mailbox = Some(mailbox);
        self
    }

    pub fn rpc(mut self, rpc: &'a str) -> Self {
        self.rpc = Some(rpc);
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// Where audit lines are written.
pub struct AuditLog {
    sink: Option<Mutex<Box<dyn Write + Send>>>,
    refusals: Mutex<RefusalWindow>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("enabled", &self.sink.is_some())
            .finish()
    }
}

#[derive(Debug)]
struct RefusalWindow {
    started: Instant,
    written: u32,
    suppressed: u64,
}

impl AuditLog {
    /// Opens the target (a file is created with mode 0600 and appended to).
    pub fn open(target: &AuditLogTarget) -> io::Result<Self> {
        let sink: Option<Box<dyn Write + Send>> = match target {
            AuditLogTarget::Off => None,
            AuditLogTarget::Stdout => Some(Box::new(io::stdout())),
            AuditLogTarget::File(path) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let mut options = OpenOptions::new();
                options.create(true).append(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                Some(Box::new(options.open(path)?))
            }
        };
        Ok(Self {
            sink: sink.map(Mutex::new),
            refusals: Mutex::new(RefusalWindow {
                started: Instant::now(),
                written: 0,
                suppressed: 0,
            }),
        })
    }

    /// An audit log that writes nothing.
    pub fn off() -> Self {
        Self {
            sink: None,
            refusals: Mutex::new(RefusalWindow {
                started: Instant::now(),
                written: 0,
                suppressed: 0,
            }),
        }
    }

    /// Writes one line. Refused calls beyond the per-second allowance are only counted.
    pub fn record(&self, record: AuditRecord<'_>) {
        if self.sink.is_none() {
            return;
        }
        if record.event == AuditEvent::Refused && !self.admit_refusal() {
            return;
        }
        self.write(&record);
    }

    fn admit_refusal(&self) -> bool {
        let suppressed = {
            let mut window = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            if window.started.elapsed().as_secs() >= 1 {
                let suppressed = window.suppressed;
                *window = RefusalWindow {
                    started: Instant::now(),
                    written: 0,
                    suppressed: 0,
                };
                suppressed
            } else if window.written >= REFUSALS_PER_SECOND {
                window.suppressed += 1;
                return false;
            } else {
                0
            }
        };
        if suppressed > 0 {
            self.write(
                &AuditRecord::new(AuditEvent::RefusalsSuppressed, "suppressed").detail(format!(
                    "{suppressed} refused calls in the last second not logged"
                )),
            );
        }
        let mut window = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        window.written += 1;
        true
    }

    fn write(&self, record: &AuditRecord<'_>) {
        let Some(sink) = &self.sink else { return };
        #[derive(Serialize)]
        struct Line<'a> {
            timestamp: String,
            audit: bool,
            #[serde(flatten)]
            record: &'a AuditRecord<'a>,
        }
        let line = Line {
            timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            audit: true,
            record,
        };
        let Ok(mut text) = serde_json::to_string(&line) else {
            return;
        };
        text.push('\n');
        let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = sink.write_all(text.as_bytes()).and_then(|()| sink.flush()) {
            tracing::error!(%error, "cannot write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn each_event_is_one_json_line_with_caller_mailbox_and_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&AuditLogTarget::File(path.clone())).unwrap();
        log.record(
            AuditRecord::new(AuditEvent::Disconnect, "ok")
                .caller("ops")
                .mailbox("noreply@contoso.com"),
        );
        let written = lines(&path);
        assert_eq!(written.len(), 1);
        assert_eq!(written[0]["event"], "disconnect");
        assert_eq!(written[0]["caller"], "ops");
        assert_eq!(written[0]["mailbox"], "noreply@contoso.com");
        assert_eq!(written[0]["outcome"], "ok");
        assert!(written[0]["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn a_flood_of_refusals_is_capped_and_summarised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&AuditLogTarget::File(path.clone())).unwrap();
        for _ in 0..1000 {
            log.record(AuditRecord::new(AuditEvent::Refused, "unauthenticated").rpc("SendMail"));
        }
        assert_eq!(lines(&path).len(), REFUSALS_PER_SECOND as usize);
        log.refusals.lock().unwrap().started -= std::time::Duration::from_secs(2);
        log.record(AuditRecord::new(AuditEvent::Refused, "unauthenticated"));
        let written = lines(&path);
        let summary = &written[REFUSALS_PER_SECOND as usize];
        assert_eq!(summary["event"], "refusals_suppressed");
        assert!(summary["detail"].as_str().unwrap().starts_with("980 "));
    }
}
