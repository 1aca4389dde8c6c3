//! One refresh of a mailbox's tokens: under the mailbox's single flight and the store's token
//! lease, Microsoft asked with the granted scopes (outages retried), the rotated tokens written
//! with a compare-and-set (the write retried), failures classified.

use std::time::{Duration, Instant};

use secrecy::SecretString;

use super::{
    TokenGrant, TokenRequestError,
    error::ErrorClass,
    token_manager::{AccessToken, Need, TokenError, TokenManager},
};
use crate::{
    domain::Mailbox,
    metrics,
    retry::{Backoff, Decision, retry},
    store::{ErrorSource, RefreshedTokens, Saved, StoredTokens},
};

/// How the write of refreshed tokens is retried: five attempts over a few seconds.
const SAVE_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(200),
    cap: Duration::from_secs(2),
    max_attempts: 5,
    budget: None,
};

impl TokenManager {
    pub(super) async fn refresh(
        &self,
        mailbox: &Mailbox,
        need: Need,
    ) -> Result<AccessToken, TokenError> {
        let flight = self.flight(mailbox);
        let _in_flight = flight.lock().await;
        // The lease spans replicas; no transaction or connection is held while Microsoft
        // answers.
        let Some(lease) = self.store.lease_tokens(mailbox).await? else {
            return Err(TokenError::NotConnected {
                mailbox: mailbox.clone(),
            });
        };
        let tokens = self
            .connected_tokens(mailbox, self.store.tokens(mailbox).await?)
            .await?;
        if !self.needs_refresh(&tokens, need) {
            // Someone (here or on another replica) refreshed while we waited.
            lease.release().await?;
            return Ok(AccessToken::from_stored(&tokens));
        }
        let result = self
            .request_with_retries(&tokens.refresh_token, &tokens.scopes)
            .await;
        let outcome = match result {
            Ok(grant) => self.store_refreshed(mailbox, grant, tokens).await,
            Err(error) => self.refresh_failed(mailbox, &tokens, error, need).await,
        };
        lease.release().await?;
        outcome
    }

    /// Writes a refresh's tokens; when a Connect or Disconnect wrote since they were read,
    /// theirs stand and are what the caller gets.
    async fn store_refreshed(
        &self,
        mailbox: &Mailbox,
        grant: TokenGrant,
        old: StoredTokens,
    ) -> Result<AccessToken, TokenError> {
        let refreshed = self.refreshed_tokens(mailbox, grant, &old);
        let saved = self
            .save_with_retries(mailbox, &refreshed, old.generation)
            .await?;
        if saved == Saved::Superseded {
            tracing::info!(
                mailbox_domain = mailbox.domain(),
                "the tokens changed during the refresh (Connect or Disconnect); keeping theirs"
            );
            let current = self
                .connected_tokens(mailbox, self.store.tokens(mailbox).await?)
                .await?;
            return Ok(AccessToken::from_stored(&current));
        }
        metrics::token_refresh("success");
        tracing::info!(mailbox_domain = mailbox.domain(), "access token refreshed");
        Ok(AccessToken {
            secret: refreshed.access_token,
            expires_at: refreshed.access_token_expires_at,
            scopes: refreshed.scopes.unwrap_or(old.scopes),
            generation: old.generation + 1,
            sending_address: old.sending_address,
        })
    }

    /// The rotated refresh token exists only in this answer: a failed write is retried before
    /// the refresh counts as failed.
    async fn save_with_retries(
        &self,
        mailbox: &Mailbox,
        refreshed: &RefreshedTokens,
        read_generation: i64,
    ) -> Result<Saved, TokenError> {
        let outcome = retry(
            &SAVE_BACKOFF,
            Instant::now(),
            || {
                self.store
                    .save_refreshed(mailbox, refreshed, read_generation, self.clock.now())
            },
            |_| Decision::Retry { retry_after: None },
            |error, attempt, _| {
                tracing::warn!(
                    mailbox_domain = mailbox.domain(),
                    attempt,
                    error = crate::telemetry::redact_addresses(&error.to_string()),
                    "cannot store the refreshed tokens yet; retrying"
                );
            },
        )
        .await;
        outcome.map_err(|gave_up| gave_up.error.into())
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
