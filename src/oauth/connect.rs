//! Connect: hand out a sign-in link, then finish the sign-in when Microsoft redirects back.
//!
//! The callback trusts nothing it is sent: the `state` must be one this service issued, unused
//! and unexpired (it is deleted on first use, on whichever replica the browser lands); the code
//! is redeemed with the PKCE verifier stored beside that state; and the account that signed in,
//! read from the id_token, must own the mailbox the link was made for.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{Directory, IdentityClient, TokenRequestError, error::ErrorClass, sign_in};
use crate::{
    audit::{AuditEvent, AuditLog, AuditRecord},
    clock::SharedClock,
    domain::Mailbox,
    metrics,
    store::{
        ErrorSource, LinkLimits, NewConnection, PendingAuthorization, Store, StoreError, Stored,
    },
    variables,
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
    #[error("{outstanding} sign-in links are out already")]
    TooManyLinks { outstanding: u64 },
}

/// How many sign-in links may be out: a few per mailbox (a new one replaces the oldest) and a
/// thousand in all, so Connect cannot fill the store.
pub const LINK_LIMITS: LinkLimits = LinkLimits {
    per_mailbox: 3,
    total: 1000,
};

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
    pub(super) fn failed(
        status: u16,
        title: impl Into<String>,
        what_to_do: impl Into<String>,
    ) -> Self {
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
    directory: Arc<dyn Directory>,
    audit: Arc<AuditLog>,
    store: Store,
    clock: SharedClock,
}

impl ConnectFlow {
    pub fn new(
        identity: Arc<IdentityClient>,
        directory: Arc<dyn Directory>,
        store: Store,
        clock: SharedClock,
        audit: Arc<AuditLog>,
    ) -> Self {
        Self {
            identity,
            directory,
            audit,
            store,
            clock,
        }
    }

    /// Creates a single-use sign-in link for `mailbox`, valid for ten minutes, asked for by
    /// the caller named `requested_by`.
    pub async fn start(
        &self,
        mailbox: &Mailbox,
        force_consent: bool,
        requested_by: &str,
    ) -> Result<SignInLink, StartError> {
        let request = self
            .identity
            .authorize_url(mailbox, force_consent)
            .map_err(StartError::Link)?;
        let now = self.clock.now();
        let expires_at = now + chrono::Duration::minutes(LINK_LIFETIME_MINUTES);
        let stored = self
            .store
            .insert_pending(
                &PendingAuthorization {
                    state_hash: hash_state(secrecy::ExposeSecret::expose_secret(&request.state)),
                    mailbox: mailbox.clone(),
                    pkce_verifier: request.pkce_verifier,
                    created_at: now,
                    expires_at,
                    requested_by: Some(requested_by.to_owned()),
                },
                LINK_LIMITS,
            )
            .await?;
        if let Stored::Full { outstanding } = stored {
            return Err(StartError::TooManyLinks { outstanding });
        }
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
        let mut link = None;
        let outcome = self.complete_inner(params, &mut link).await;
        let (label, detail) = match &outcome {
            CallbackOutcome::Connected { .. } => ("connected", None),
            CallbackOutcome::Failed { title, .. } => ("failed", Some(title.clone())),
        };
        metrics::connect_callback(label);
        if let (Some(pending), CallbackOutcome::Failed { what_to_do, .. }) = (&link, &outcome) {
            // Someone came back through a link this service issued: Status says what went
            // wrong. (A callback without a valid link leaves nothing: anyone can send one.)
            self.record_failure(&pending.mailbox, what_to_do).await;
        }
        let mut record = AuditRecord::new(AuditEvent::Callback, label);
        if let Some(pending) = &link {
            record = record.mailbox(pending.mailbox.as_str());
            if let Some(caller) = &pending.requested_by {
                record = record.caller(caller);
            }
        }
        if let Some(detail) = detail {
            record = record.detail(detail);
        }
        self.audit.record(record);
        outcome
    }

    async fn record_failure(&self, mailbox: &Mailbox, what_to_do: &str) {
        if let Err(error) = self
            .store
            .set_last_error(mailbox, ErrorSource::Token, what_to_do, self.clock.now())
            .await
        {
            tracing::error!(
                error = crate::telemetry::redact_addresses(&error.to_string()),
                "cannot record the connect failure"
            );
        }
    }

    /// `link` learns which link the callback belongs to, once it is known.
    async fn complete_inner(
        &self,
        params: CallbackParams,
        link: &mut Option<PendingAuthorization>,
    ) -> CallbackOutcome {
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
        let pending = link.insert(pending);
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
        let verified = sign_in::verify(
            &self.identity,
            self.directory.as_ref(),
            self.clock.now(),
            &mailbox,
            &grant,
        )
        .await;
        match verified {
            Ok(connection) => match sign_in::pinned_elsewhere(&self.store, &connection).await {
                Some(refused) => refused,
                None => self.save(connection).await,
            },
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
                    "{other} — try again; if it persists, check {} and the network",
                    variables::AUTHORITY_URL
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
        CallbackOutcome::Failed {
            status,
            title: format!("Microsoft did not complete the sign-in for {mailbox}."),
            what_to_do: advice,
            details,
        }
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
    // Microsoft's description can name the account that signed in (AADSTS50020).
    tracing::warn!(
        mailbox_domain = mailbox.domain(),
        error = crate::telemetry::redact_addresses(error),
        description = crate::telemetry::redact_addresses(&description),
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

/// The store keeps a hash of each state, never the state itself.
pub fn hash_state(state: &str) -> String {
    let digest = Sha256::digest(state.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
