//! Who may call, and what each caller may do.
//!
//! Every gRPC call is made by a [`Caller`]: one named in the callers file, identified by its
//! key (`authorization: Bearer gm_…`, compared as SHA-256 digests in constant time) or by its
//! TLS client certificate's SAN; or, when the service runs open (the sandbox, or graph mode with
//! `GRAPH_MAILER_ALLOW_UNAUTHENTICATED=true`), the anonymous caller with every right.
//!
//! - [`file`]: the callers file's format and checks.
//! - [`key`]: keys, their digests, `new-key`.
//! - [`rate`]: each caller's `max_per_minute`.
//!
//! The [`CallerRegistry`] holds the callers in force and re-reads the file when it changes and
//! on SIGHUP; a file with a problem leaves the previous callers in force and says why.

pub mod file;
pub mod key;
pub mod rate;
mod registry;

use std::{sync::Arc, time::Duration};

use sha2::{Digest, Sha256};

pub use registry::CallerRegistry;

use crate::domain::{Mailbox, MailboxPattern, any_matches};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Send (and look up its messages) as its mailboxes; Status of those mailboxes.
    Sender,
    /// Everything, including Connect and Disconnect.
    Admin,
}

/// One caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// From the callers file; appears in logs, metrics and the audit log.
    pub name: String,
    pub role: Role,
    /// The mailboxes a sender may send as.
    pub mailboxes: Vec<MailboxPattern>,
    pub max_per_minute: Option<u32>,
    key_sha256: Option<[u8; 32]>,
    client_cert: Option<String>,
}

/// The name of the caller of an open service.
pub const ANONYMOUS: &str = "anonymous";

impl Caller {
    /// The caller of a service running without a callers file: every right.
    pub fn anonymous() -> Self {
        Self {
            name: ANONYMOUS.to_owned(),
            role: Role::Admin,
            mailboxes: Vec::new(),
            max_per_minute: None,
            key_sha256: None,
            client_cert: None,
        }
    }

    /// An administrator signed in to the admin page: every right, named after them.
    pub fn administrator(name: String) -> Self {
        Self {
            name,
            ..Self::anonymous()
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether this caller may send as (and see) `mailbox`.
    pub fn may_send_as(&self, mailbox: &Mailbox) -> bool {
        self.is_admin() || any_matches(&self.mailboxes, mailbox)
    }

    /// The one mailbox a sender's empty `mailbox` field stands for: its only pattern, when that
    /// is an exact address.
    pub fn only_mailbox(&self) -> Option<&Mailbox> {
        match self.mailboxes.as_slice() {
            [only] => only.exact(),
            _ => None,
        }
    }

    /// The caller's mailboxes as the file lists them, for messages.
    pub fn mailbox_list(&self) -> String {
        let list: Vec<String> = self.mailboxes.iter().map(ToString::to_string).collect();
        list.join(", ")
    }
}

/// A set of callers, as one version of the file gave them.
#[derive(Debug, Default)]
pub struct Callers {
    list: Vec<Arc<Caller>>,
}

impl Callers {
    /// The caller whose key this is. Every caller's digest is compared, in constant time, so
    /// the time taken says nothing about which digest came close.
    pub fn by_key(&self, key: &str) -> Option<Arc<Caller>> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for caller in &self.list {
            if let Some(known) = &caller.key_sha256
                && key::same_digest(known, &digest)
            {
                found = Some(caller.clone());
            }
        }
        found
    }

    /// The caller named by one of a client certificate's SANs.
    pub fn by_certificate_names(&self, names: &[String]) -> Option<Arc<Caller>> {
        self.list
            .iter()
            .find(|c| {
                c.client_cert
                    .as_ref()
                    .is_some_and(|cert| names.iter().any(|n| n == cert))
            })
            .cloned()
    }

    /// A caller by name.
    pub fn by_name(&self, name: &str) -> Option<Arc<Caller>> {
        self.list.iter().find(|c| c.name == name).cloned()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Why a call was refused before it ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "no caller key: send the metadata \"authorization: Bearer <key>\" with a key from the \
         operator (graph-mailer new-key), or a client certificate the callers file names"
    )]
    MissingKey,
    #[error(
        "the caller key is not one the callers file knows: check the key, or ask the operator for one"
    )]
    UnknownKey,
    #[error("the key and the client certificate name different callers ({key} and {certificate})")]
    Conflicting { key: String, certificate: String },
    #[error("caller {caller} is over its limit of {per_minute} calls a minute: retry in {} ms", retry_after.as_millis())]
    RateLimited {
        caller: String,
        per_minute: u32,
        retry_after: Duration,
    },
}

/// What a call presents to say who it is.
#[derive(Debug, Default, Clone)]
pub struct Credentials<'a> {
    /// The `authorization` metadata, as sent.
    pub authorization: Option<&'a str>,
    /// The SANs (URI and DNS) of the client certificate, when the connection has one.
    pub certificate_names: Vec<String>,
}
