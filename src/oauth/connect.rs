//! Connect: hand out a sign-in link, then finish the sign-in when Microsoft redirects back.
//!
//! The callback trusts nothing it is sent: the `state` must be one this service issued, unused
//! and unexpired (it is deleted on first use, on whichever replica the browser lands); the code
//! is redeemed with the PKCE verifier stored beside that state; and the account that signed in,
//! read from the id_token, must own the mailbox the link was made for.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{
    IdTokenClaims, IdentityClient, TokenGrant, TokenRequestError, error::ErrorClass,
    normalize_scopes,
};
use crate::{
    clock::SharedClock,
    domain::Mailbox,
    metrics,
    store::{ErrorSource, NewConnection, PendingAuthorization, Store, StoreError},
};

/// How long a sign-in link stays valid (Microsoft's codes live about as long).
pub const LINK_LIFETIME_MINUTES: i64 = 10;

/// Why a sign-in link could not be made.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot build the sign-in link: {0}")]
    Link(TokenRequestError),
}

/// A sign-in link for the mailbox owner.
#[derive(Debug, Clone)]
pub struct SignInLink {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// The query string of `GET /oauth2/callback`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// How a callback ended, for the page the browser shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// The mailbox is connected.
    Connected { mailbox: String },
    /// Nothing was stored; `what_to_do` says how to recover.
    Failed {
        /// HTTP status of the page.
        status: u16,
        /// One line: what went wrong.
        title: String,
        /// What to do now.
        what_to_do: String,
        /// Microsoft's code and support IDs, when Microsoft was involved.
        details: Option<String>,
    },
}

impl CallbackOutcome {
    fn failed(status: u16, title: impl Into<String>, what_to_do: impl Into<String>) -> Self {
        Self::Failed {
            status,
            title: title.into(),
            what_to_do: what_to_do.into(),
            details: None,
        }
    }
}

/// Starts and finishes sign-ins.
#[derive(Debug)]
pub struct ConnectFlow {
    identity: Arc<IdentityClient>,
    store: Store,
    clock: SharedClock,
}

impl ConnectFlow {
    pub fn new(identity: Arc<IdentityClient>, store: Store, clock: SharedClock) -> Self {
        Self {
            identity,
            store,
            clock,
        }
    }

    /// Creates a single-use sign-in link for `mailbox`, valid for ten minutes.
    pub async fn start(
        &self,
        mailbox: &Mailbox,
        force_consent: bool,
    ) -> Result<SignInLink, StartError> {
        let request = self
            .identity
            .authorize_url(mailbox, force_consent)
            .map_err(StartError::Link)?;
        let now = self.clock.now();
        let expires_at = now + chrono::Duration::minutes(LINK_LIFETIME_MINUTES);
        self.store
            .insert_pending(&PendingAuthorization {
                state_hash: hash_state(secrecy::ExposeSecret::expose_secret(&request.state)),
                mailbox: mailbox.clone(),
                pkce_verifier: request.pkce_verifier,
                created_at: now,
                expires_at,
            })
            .await?;
        tracing::info!(
            mailbox_domain = mailbox.domain(),
            force_consent,
            "sign-in link issued"
        );
        Ok(SignInLink {
            url: request.url.to_string(),
            expires_at,
        })
    }

    /// Finishes a sign-in from the callback's query string.
    pub async fn complete(&self, params: CallbackParams) -> CallbackOutcome {
        let outcome = self.complete_inner(params).await;
        let label = match &outcome {
            CallbackOutcome::Connected { .. } => "connected",
            CallbackOutcome::Failed { .. } => "failed",
        };
        metrics::connect_callback(label);
        outcome
    }

    async fn complete_inner(&self, params: CallbackParams) -> CallbackOutcome {
        let Some(state) = params.state.as_deref().filter(|s| !s.is_empty()) else {
            return CallbackOutcome::failed(
                400,
                "This sign-in link is incomplete.",
                "Ask your operator for a new link (graph-mailer's Connect) and open it unchanged.",
            );
        };
        let pending = match self.store.take_pending(&hash_state(state)).await {
            Ok(Some(pending)) => pending,
            Ok(None) => {
                tracing::warn!("callback with an unknown or already used state refused");
                return CallbackOutcome::failed(
                    400,
                    "This sign-in link is unknown or was already used.",
                    "Each link works once. Ask your operator to call Connect again for a new link.",
                );
            }
            Err(error) => {
                tracing::error!(
                    error = crate::telemetry::redact_addresses(&error.to_string()),
                    "cannot read the pending sign-in"
                );
                return CallbackOutcome::failed(
                    503,
                    "graph-mailer cannot reach its database right now.",
                    "Try the link again in a minute.",
                );
            }
        };
        let mailbox = pending.mailbox.clone();
        if pending.expires_at <= self.clock.now() {
            return CallbackOutcome::failed(
                400,
                format!("This sign-in link for {mailbox} has expired."),
                format!(
                    "Links work for {LINK_LIFETIME_MINUTES} minutes. Call Connect again for {mailbox} and open the new link promptly."
                ),
            );
        }
        if let Some(error) = params.error.as_deref() {
            return declined(&mailbox, error, params.error_description.as_deref());
        }
        let Some(code) = params.code.as_deref().filter(|c| !c.is_empty()) else {
            return CallbackOutcome::failed(
                400,
                "Microsoft sent no authorization code.",
                format!("Call Connect again for {mailbox}."),
            );
        };
        let grant = match self
            .identity
            .redeem_code(code, &pending.pkce_verifier)
            .await
        {
            Ok(grant) => grant,
            Err(error) => return self.redemption_failed(&mailbox, error).await,
        };
        match self.verify(&mailbox, &grant) {
            Ok(connection) => self.save(connection).await,
            Err(outcome) => outcome,
        }
    }

    async fn redemption_failed(
        &self,
        mailbox: &Mailbox,
        error: TokenRequestError,
    ) -> CallbackOutcome {
        let (advice, details, status) = match &error {
            TokenRequestError::Microsoft(e) => {
                let status = match e.class() {
                    ErrorClass::Transient => 503,
                    ErrorClass::Configuration | ErrorClass::ClientSecret => 500,
                    _ => 400,
                };
                (
                    e.advice(mailbox.as_str(), self.identity.redirect_uri()),
                    Some(e.to_string()),
                    status,
                )
            }
            other => (
                format!(
                    "{other} — try again; if it persists, check GRAPH_MAILER_AUTHORITY_URL and the network"
                ),
                None,
                502,
            ),
        };
        tracing::error!(
            mailbox_domain = mailbox.domain(),
            error = crate::telemetry::redact_addresses(&error.to_string()),
            "code redemption failed"
        );
        if let Err(store_error) = self
            .store
            .set_last_error(mailbox, ErrorSource::Token, &advice, self.clock.now())
            .await
        {
            tracing::error!(
                error = crate::telemetry::redact_addresses(&store_error.to_string()),
                "cannot record the connect failure"
            );
        }
        CallbackOutcome::Failed {
            status,
            title: format!("Microsoft did not complete the sign-in for {mailbox}."),
            what_to_do: advice,
            details,
        }
    }

    /// The checks between Microsoft's answer and storing it.
    fn verify(
        &self,
        mailbox: &Mailbox,
        grant: &TokenGrant,
    ) -> Result<NewConnection, CallbackOutcome> {
        let claims = grant
            .id_token
            .as_deref()
            .ok_or_else(|| "Microsoft returned no id_token".to_owned())
            .and_then(IdTokenClaims::decode)
            .map_err(|reason| {
                tracing::error!(reason, "id_token unusable");
                CallbackOutcome::failed(
                    502,
                    "Microsoft's answer did not say who signed in.",
                    format!("{reason}; the openid scope must be granted. Call Connect again for {mailbox}."),
                )
            })?;
        if claims.aud != self.identity.client_id().as_str() {
            tracing::error!("id_token audience is not this app; refused");
            return Err(CallbackOutcome::failed(
                400,
                "The sign-in was issued to a different application.",
                "Check GRAPH_MAILER_CLIENT_ID, then call Connect again.",
            ));
        }
        let tenant = self.identity.tenant();
        if tenant.is_guid()
            && !claims
                .tid
                .as_deref()
                .is_some_and(|tid| tid.eq_ignore_ascii_case(tenant.as_str()))
        {
            tracing::error!("id_token tenant is not the configured tenant; refused");
            return Err(CallbackOutcome::failed(
                400,
                "The account signed in belongs to a different Microsoft 365 tenant.",
                format!("Sign in with an account of the tenant that owns {mailbox}."),
            ));
        }
        let owned = [
            claims.preferred_username.as_deref(),
            claims.email.as_deref(),
        ]
        .into_iter()
        .flatten()
        .any(|account| mailbox.is_owned_by(account));
        if !owned {
            let signed_in = claims.account().unwrap_or("an unnamed account");
            tracing::warn!(
                mailbox_domain = mailbox.domain(),
                "sign-in by an account that does not own the mailbox refused"
            );
            return Err(CallbackOutcome::failed(
                403,
                format!("You signed in as {signed_in}, but this link connects {mailbox}."),
                format!(
                    "You signed in as {signed_in}, but this link connects {mailbox}. Sign out of \
                     Microsoft (or use a private window), open the link again and sign in as {mailbox}."
                ),
            ));
        }
        let granted = match &grant.scopes {
            Some(scopes) => normalize_scopes(scopes),
            // RFC 6749 5.1: no scope in the response means the requested scope was granted.
            None => normalize_scopes(&self.identity.scopes().request_scopes()),
        };
        if !granted.iter().any(|s| s.eq_ignore_ascii_case("Mail.Send")) {
            return Err(missing_permission(
                mailbox,
                "Mail.Send",
                "the app cannot send mail without it",
            ));
        }
        let Some(refresh_token) = grant.refresh_token.clone() else {
            return Err(missing_permission(
                mailbox,
                "offline_access",
                "without it Microsoft returns no refresh token and the connection would end within the hour",
            ));
        };
        let mut scopes = granted;
        if !scopes.iter().any(|s| s == "offline_access") {
            scopes.push("offline_access".into());
        }
        Ok(NewConnection {
            mailbox: mailbox.clone(),
            account: claims.account().unwrap_or(mailbox.as_str()).to_owned(),
            object_id: claims.oid.clone(),
            tenant_id: claims.tid.clone(),
            scopes,
            access_token: grant.access_token.clone(),
            access_token_expires_at: self.clock.now() + grant.expires_in,
            refresh_token,
        })
    }

    async fn save(&self, connection: NewConnection) -> CallbackOutcome {
        let mailbox = connection.mailbox.to_string();
        match self
            .store
            .save_connection(&connection, self.clock.now())
            .await
        {
            Ok(()) => {
                tracing::info!(
                    mailbox_domain = connection.mailbox.domain(),
                    "mailbox connected"
                );
                CallbackOutcome::Connected { mailbox }
            }
            Err(error) => {
                tracing::error!(
                    error = crate::telemetry::redact_addresses(&error.to_string()),
                    "cannot store the new connection"
                );
                CallbackOutcome::failed(
                    503,
                    "graph-mailer could not save the connection.",
                    format!(
                        "Its database is unavailable. Call Connect again for {mailbox} in a few minutes."
                    ),
                )
            }
        }
    }
}

fn declined(mailbox: &Mailbox, error: &str, description: Option<&str>) -> CallbackOutcome {
    let description = description
        .and_then(|d| d.lines().next())
        .unwrap_or(error)
        .to_owned();
    tracing::warn!(
        mailbox_domain = mailbox.domain(),
        error,
        description,
        "sign-in not completed"
    );
    let what_to_do = if error == "access_denied" {
        format!(
            "The permissions were not accepted, so nothing changed. To connect {mailbox}, call \
             Connect again, sign in as {mailbox} and accept the permissions (an administrator may \
             have to grant consent for the organisation first)."
        )
    } else {
        format!(
            "Nothing changed. Fix what Microsoft reports, then call Connect again for {mailbox}."
        )
    };
    CallbackOutcome::Failed {
        status: if error == "access_denied" { 403 } else { 400 },
        title: format!("Microsoft reported: {description}"),
        what_to_do,
        details: Some(format!("error {error}")),
    }
}

fn missing_permission(mailbox: &Mailbox, permission: &str, why: &str) -> CallbackOutcome {
    tracing::warn!(
        mailbox_domain = mailbox.domain(),
        permission,
        "granted scopes lack a permission"
    );
    CallbackOutcome::failed(
        400,
        format!("Microsoft did not grant the {permission} permission."),
        format!(
            "Add the delegated Microsoft Graph permission {permission} to the app registration \
             (API permissions → Add a permission → Microsoft Graph → Delegated), then call Connect \
             again for {mailbox} with force_consent: {why}."
        ),
    )
}

/// The store keeps a hash of each state, never the state itself.
pub fn hash_state(state: &str) -> String {
    let digest = Sha256::digest(state.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
