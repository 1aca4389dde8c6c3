//! The refresh engine: a valid access token for any connected mailbox, refreshed at most once
//! at a time, the rotated refresh token stored before the new access token is used.
//!
//! - **Single flight.** Callers that find a token about to expire queue on a per-mailbox lock;
//!   the first refreshes, the others re-read the store and find the fresh token. On PostgreSQL
//!   the store adds a cross-replica lock, so replicas refresh once between them.
//! - **Rotation.** Every refresh returns a new refresh token; it replaces the old one in the
//!   same write as the access token, committed before anyone uses either.
//! - **Failure classes.** A dead grant marks the mailbox REAUTHORIZATION_REQUIRED; a bad secret
//!   is a configuration error; outages are retried with jittered backoff while the old token,
//!   if still valid, keeps being served.
//! - **Proactive.** A background task refreshes tokens ahead of expiry and connections idle for
//!   days, so Microsoft's 90-day inactivity expiry never hits a quiet mailbox.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::{
    IdentityClient, TokenGrant, TokenRequestError, error::ErrorClass, token_cache::TokenCache,
};
use crate::{
    clock::SharedClock,
    domain::Mailbox,
    metrics,
    retry::{Backoff, Decision, retry},
    settings::TokenSettings,
    store::{ConnectionState, ErrorSource, RefreshedTokens, Store, StoreError, StoredTokens},
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
    fn from_stored(tokens: &StoredTokens) -> Self {
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
    identity: Arc<IdentityClient>,
    pub(super) clock: SharedClock,
    pub(super) settings: TokenSettings,
    retry: Backoff,
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

    async fn connected_tokens(
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

    fn flight(&self, mailbox: &Mailbox) -> Arc<tokio::sync::Mutex<()>> {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        flights.entry(mailbox.clone()).or_default().clone()
    }

    pub(super) async fn refresh(
        &self,
        mailbox: &Mailbox,
        need: Need,
    ) -> Result<AccessToken, TokenError> {
        let flight = self.flight(mailbox);
        let _in_flight = flight.lock().await;
        let mut lock = self.store.lock_tokens(mailbox).await?;
        let tokens = match lock.tokens().await {
            Ok(tokens) => tokens,
            Err(error) => {
                lock.release().await?;
                return Err(error.into());
            }
        };
        let tokens = match self.connected_tokens(mailbox, tokens).await {
            Ok(tokens) => tokens,
            Err(error) => {
                lock.release().await?;
                return Err(error);
            }
        };
        if !self.needs_refresh(&tokens, need) {
            // Someone (here or on another replica) refreshed while we waited.
            lock.release().await?;
            return Ok(AccessToken::from_stored(&tokens));
        }
        let result = self
            .request_with_retries(&tokens.refresh_token, &tokens.scopes)
            .await;
        let now = self.clock.now();
        match result {
            Ok(grant) => {
                let refreshed = self.refreshed_tokens(mailbox, grant, &tokens);
                lock.save_refreshed(&refreshed, now).await?;
                lock.release().await?;
                metrics::token_refresh("success");
                tracing::info!(mailbox_domain = mailbox.domain(), "access token refreshed");
                let generation = tokens.generation + 1;
                Ok(AccessToken {
                    secret: refreshed.access_token,
                    expires_at: refreshed.access_token_expires_at,
                    scopes: refreshed.scopes.unwrap_or(tokens.scopes),
                    generation,
                    sending_address: tokens.sending_address,
                })
            }
            Err(error) => {
                lock.release().await?;
                self.refresh_failed(mailbox, &tokens, error, need).await
            }
        }
    }

    fn refreshed_tokens(
        &self,
        mailbox: &Mailbox,
        grant: TokenGrant,
        old: &StoredTokens,
    ) -> RefreshedTokens {
        let refresh_token = grant.refresh_token.unwrap_or_else(|| {
            // Microsoft always rotates; keep the old one rather than lose the connection.
            tracing::warn!(
                mailbox_domain = mailbox.domain(),
                "refresh returned no new refresh token; keeping the old one"
            );
            old.refresh_token.clone()
        });
        RefreshedTokens {
            access_token: grant.access_token,
            access_token_expires_at: self.clock.now() + grant.expires_in,
            refresh_token,
            scopes: grant.scopes.map(|scopes| {
                let mut scopes = self.identity.scopes().short_names(&scopes);
                if !scopes.iter().any(|s| s == "offline_access") {
                    scopes.push("offline_access".into());
                }
                scopes
            }),
        }
    }

    /// Redeems the refresh token, retrying outages and throttling with the refresh backoff.
    async fn request_with_retries(
        &self,
        refresh_token: &SecretString,
        granted: &[String],
    ) -> Result<TokenGrant, TokenRequestError> {
        retry(
            &self.retry,
            Instant::now(),
            || self.identity.refresh(refresh_token, granted),
            |error: &TokenRequestError| match error.class() {
                ErrorClass::Transient => Decision::Retry { retry_after: None },
                _ => Decision::Stop,
            },
            |error, _, delay| {
                tracing::warn!(
                    error = crate::telemetry::redact_addresses(&error.to_string()),
                    delay_ms = delay.as_millis() as u64,
                    "token refresh failed; retrying"
                );
                metrics::token_refresh("retried");
            },
        )
        .await
        .map_err(|gave_up| gave_up.error)
    }

    async fn refresh_failed(
        &self,
        mailbox: &Mailbox,
        old: &StoredTokens,
        error: TokenRequestError,
        need: Need,
    ) -> Result<AccessToken, TokenError> {
        let now = self.clock.now();
        let aadsts = match &error {
            TokenRequestError::Microsoft(e) => e.code(),
            _ => None,
        };
        let advice = match &error {
            TokenRequestError::Microsoft(e) => {
                e.advice(mailbox.as_str(), self.identity.redirect_uri())
            }
            other => format!("{other} — the service keeps retrying"),
        };
        tracing::error!(
            mailbox_domain = mailbox.domain(),
            error = crate::telemetry::redact_addresses(&error.to_string()),
            "token refresh failed"
        );
        match error.class() {
            ErrorClass::ReauthorizationRequired
            | ErrorClass::Declined
            | ErrorClass::CodeRejected => {
                metrics::token_refresh("reauthorization_required");
                self.store
                    .mark_reauthorization_required(mailbox, &advice, now)
                    .await?;
                Err(TokenError::ReauthorizationRequired {
                    mailbox: mailbox.clone(),
                    aadsts,
                    advice,
                })
            }
            ErrorClass::Configuration | ErrorClass::ClientSecret => {
                metrics::token_refresh("configuration_error");
                self.store
                    .set_last_error(mailbox, ErrorSource::Token, &advice, now)
                    .await?;
                Err(TokenError::Configuration { aadsts, advice })
            }
            ErrorClass::ClientBug => {
                metrics::token_refresh("client_error");
                self.store
                    .set_last_error(mailbox, ErrorSource::Token, &advice, now)
                    .await?;
                Err(TokenError::Bug { advice })
            }
            ErrorClass::Transient | ErrorClass::Unknown => {
                metrics::token_refresh("transient_error");
                self.store
                    .set_last_error(mailbox, ErrorSource::Token, &advice, now)
                    .await?;
                let still_valid = old.access_token_expires_at - now > chrono::Duration::seconds(30);
                if still_valid && !matches!(need, Need::Replace { .. }) {
                    tracing::warn!(
                        mailbox_domain = mailbox.domain(),
                        "serving the old access token while Microsoft is unavailable"
                    );
                    Ok(AccessToken::from_stored(old))
                } else {
                    Err(TokenError::Unavailable { advice })
                }
            }
        }
    }
}
