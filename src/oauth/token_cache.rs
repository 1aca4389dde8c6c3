//! Access tokens kept in memory for a few seconds, so a busy mailbox does not read and decrypt
//! its token from the store for every message.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

use super::AccessToken;
use crate::domain::Mailbox;

/// How long a token read from the store is served from memory before the store is read again
/// (another replica may have disconnected the mailbox, or refreshed its token).
const REVALIDATE_AFTER: Duration = Duration::from_secs(5);

/// The recently read tokens, by mailbox.
#[derive(Debug, Default)]
pub(super) struct TokenCache {
    tokens: Mutex<HashMap<Mailbox, Cached>>,
}

#[derive(Debug)]
struct Cached {
    token: AccessToken,
    read_at: Instant,
}

impl TokenCache {
    /// The mailbox's token if it was read recently and stays valid until `valid_until`.
    pub(super) fn get(&self, mailbox: &Mailbox, valid_until: DateTime<Utc>) -> Option<AccessToken> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let cached = tokens.get(mailbox)?;
        let fresh =
            cached.read_at.elapsed() < REVALIDATE_AFTER && cached.token.expires_at >= valid_until;
        fresh.then(|| cached.token.clone())
    }

    pub(super) fn remember(&self, mailbox: &Mailbox, token: &AccessToken) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.insert(
            mailbox.clone(),
            Cached {
                token: token.clone(),
                read_at: Instant::now(),
            },
        );
    }

    pub(super) fn forget(&self, mailbox: &Mailbox) {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(mailbox);
    }
}
