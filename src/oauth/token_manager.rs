//! The refresh engine: a valid access token for any connected mailbox, refreshed at most once
//! at a time, the rotated refresh token stored before the new access token is used.
//!
//! - **Single flight.** Callers that find a token about to expire queue on a per-mailbox lock;
//!   the first refreshes, the others re-read the store and find the fresh token. Across
//!   replicas the store's token lease does the same, without holding a transaction or a
//!   connection while Microsoft answers.
//! - **Rotation.** Every refresh returns a new refresh token; it replaces the old one in the
//!   same write as the access token (retried if the database hiccups), stored before anyone
//!   uses either. The write is a compare-and-set on the tokens' generation: a refresh that
//!   ends after a new Connect never overwrites it.
//! - **Failure classes.** A dead grant marks the mailbox REAUTHORIZATION_REQUIRED; a bad secret
//!   is a configuration error; outages are retried with jittered backoff while the old token,
//!   if still valid, keeps being served.
//! - **Proactive.** A background task refreshes tokens ahead of expiry and connections idle for
//!   days, so Microsoft's 90-day inactivity expiry never hits a quiet mailbox.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::{IdentityClient, token_cache::TokenCache};
use crate::{
    clock::SharedClock,
    domain::Mailbox,
    retry::Backoff,
    settings::TokenSettings,
    store::{ConnectionState, Store, StoreError, StoredTokens},
};

/// A usable access token.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub secret: SecretString,
    pub expires_at: DateTime<Utc>,
    /// Granted scopes (short names).
    pub scopes: Vec<String>,
    /// Which write of the tokens this is; see [`TokenManager::replace_rejected`].
    pub generation: i64,
    /// The address mail goes out from (the account's primary SMTP address), when known.
    pub sending_address: Option<String>,
}

impl AccessToken {
    pub(super) fn from_stored(tokens: &StoredTokens) -> Self {
        Self {
            secret: tokens.access_token.clone(),
            expires_at: tokens.access_token_expires_at,
            scopes: tokens.scopes.clone(),
            generation: tokens.generation,
            sending_address: tokens.sending_address.clone(),
        }
    }

    /// Whether Microsoft granted `scope` (case-insensitive, short name).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s.eq_ignore_ascii_case(scope))
    }
}

/// Why no token can be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The mailbox holds no tokens: it was never connected, or was disconnected.
    #[error("{mailbox} is not connected: call Connect for it and have its owner sign in")]
    NotConnected { mailbox: Mailbox },
    /// Microsoft no longer honours the mailbox's grant: its owner must sign in again.
    #[error("{mailbox} must be reauthorized: {advice}")]
    ReauthorizationRequired {
        mailbox: Mailbox,
        /// Microsoft's AADSTS code, when this refresh learnt it.
        aadsts: Option<u64>,
        /// The operator sentence (also the mailbox's `last_error`).
        advice: String,
    },
    /// The app registration or the service's settings are wrong.
    #[error("{advice}")]
    Configuration { aadsts: Option<u64>, advice: String },
    /// Microsoft says graph-mailer misbehaved: a bug, reported as such.
    #[error("{advice}")]
    Bug { advice: String },
    /// The identity platform is unreachable or throttling, and no valid token is left.
    #[error("{advice}")]
    Unavailable { advice: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a token is being asked for; decides whether the stored one will do.
#[derive(Debug, Clone, Copy)]
pub(super) enum Need {
    /// For use now: valid for at least the refresh margin.
    Usable,
    /// Graph rejected the token of this generation: replace it unless someone already did.
    Replace { rejected_generation: i64 },
    /// Background upkeep: expiring within the look-ahead, or idle for too long.
    Upkeep,
    /// Refresh regardless (`check` proves the refresh token works).
    Now,
}

/// How transient refresh failures are retried unless a test says otherwise: three attempts,
/// backing off from half a second to at most five.
pub const REFRESH_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(500),
    cap: Duration::from_secs(5),
    max_attempts: 3,
    budget: None,
};

/// Hands out access tokens and keeps them fresh.
#[derive(Debug)]
pub struct TokenManager {
    pub(super) store: Store,
    pub(super) identity: Arc<IdentityClient>,
    pub(super) clock: SharedClock,
    pub(super) settings: TokenSettings,
    pub(super) retry: Backoff,
    flights: Mutex<HashMap<Mailbox, Arc<tokio::sync::Mutex<()>>>>,
    cache: TokenCache,
}

impl TokenManager {
    pub fn new(
        store: Store,
        identity: Arc<IdentityClient>,
        clock: SharedClock,
        settings: TokenSettings,
        retry: Backoff,
    ) -> Self {
        Self {
            store,
            identity,
            clock,
            settings,
            retry,
            flights: Mutex::new(HashMap::new()),
            cache: TokenCache::default(),
        }
    }

    /// A token valid for at least the refresh margin (5 minutes by default).
    pub async fn access_token(&self, mailbox: &Mailbox) -> Result<AccessToken, TokenError> {
        if let Some(token) = self
            .cache
            .get(mailbox, self.clock.now() + self.settings.refresh_margin)
        {
            return Ok(token);
        }
        let tokens = self
            .connected_tokens(mailbox, self.store.tokens(mailbox).await?)
            .await?;
        let token = if self.needs_refresh(&tokens, Need::Usable) {
            self.refresh(mailbox, Need::Usable).await?
        } else {
            AccessToken::from_stored(&tokens)
        };
        self.cache.remember(mailbox, &token);
        Ok(token)
    }

    /// Drops the mailbox's token from memory (after Disconnect).
    pub fn forget(&self, mailbox: &Mailbox) {
        self.cache.forget(mailbox);
    }

    /// Graph answered 401 to `rejected`: a fresh token, refreshed once no matter how many
    /// sends saw the rejection.
    pub async fn replace_rejected(
        &self,
        mailbox: &Mailbox,
        rejected: &AccessToken,
    ) -> Result<AccessToken, TokenError> {
        self.forget(mailbox);
        let token = self
            .refresh(
                mailbox,
                Need::Replace {
                    rejected_generation: rejected.generation,
                },
            )
            .await?;
        self.cache.remember(mailbox, &token);
        Ok(token)
    }

    /// Refreshes now, whatever the token's age: proves that Microsoft still honours the grant.
    pub async fn refresh_now(&self, mailbox: &Mailbox) -> Result<AccessToken, TokenError> {
        self.refresh(mailbox, Need::Now).await
    }

    pub(super) fn needs_refresh(&self, tokens: &StoredTokens, need: Need) -> bool {
        let now = self.clock.now();
        let remaining = tokens.access_token_expires_at - now;
        match need {
            Need::Usable => remaining < self.settings.refresh_margin,
            Need::Replace {
                rejected_generation,
            } => tokens.generation == rejected_generation,
            Need::Upkeep => {
                let idle = tokens
                    .last_refreshed_at
                    .is_none_or(|at| now - at >= self.settings.idle_refresh_after);
                remaining < self.settings.refresh_ahead || idle
            }
            Need::Now => true,
        }
    }

    pub(super) async fn connected_tokens(
        &self,
        mailbox: &Mailbox,
        tokens: Option<StoredTokens>,
    ) -> Result<StoredTokens, TokenError> {
        match tokens {
            Some(tokens) if tokens.state == ConnectionState::Connected => Ok(tokens),
            Some(tokens) if tokens.state == ConnectionState::ReauthorizationRequired => {
                let advice = self
                    .store
                    .mailbox(mailbox, self.clock.now())
                    .await?
                    .and_then(|record| record.last_error)
                    .unwrap_or_else(|| format!("call Connect again for {mailbox}"));
                Err(TokenError::ReauthorizationRequired {
                    mailbox: mailbox.clone(),
                    aadsts: None,
                    advice,
                })
            }
            _ => Err(TokenError::NotConnected {
                mailbox: mailbox.clone(),
            }),
        }
    }

    pub(super) fn flight(&self, mailbox: &Mailbox) -> Arc<tokio::sync::Mutex<()>> {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        flights.entry(mailbox.clone()).or_default().clone()
    }
}
