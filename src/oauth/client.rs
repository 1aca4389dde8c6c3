//! The one client of the Microsoft identity platform: authorization URLs, code redemption,
//! refreshes and the tenant's discovery document.
//!
//! Built on the `oauth2` crate with credentials in the request body (`AuthType::RequestBody`)
//! and an HTTP client that never follows redirects. The OAuth client is assembled per request
//! because the client secret may rotate under a running service.

use std::sync::Arc;

use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    StandardRevocableToken, TokenResponse, TokenUrl,
    basic::{BasicRevocationErrorResponse, BasicTokenIntrospectionResponse},
};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::{
    error::{ErrorClass, MicrosoftError},
    secret::ClientSecretProvider,
    token_response::MicrosoftTokenResponse,
};
use crate::{
    domain::Mailbox,
    settings::{AzureSettings, ClientId, GraphScopes, TenantId},
    variables,
};

type OAuthClient = oauth2::Client<
    MicrosoftError,
    MicrosoftTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Tokens granted by Microsoft.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub access_token: SecretString,
    /// Lifetime of the access token (60 to 90 minutes, randomly).
    pub expires_in: chrono::Duration,
    pub refresh_token: Option<SecretString>,
    /// Granted scopes as Microsoft listed them, `None` when it did not (then: as requested).
    pub scopes: Option<Vec<String>>,
    pub id_token: Option<String>,
}

/// Why a token request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenRequestError {
    /// Microsoft answered with an error body.
    #[error("{0}")]
    Microsoft(Box<MicrosoftError>),
    /// No answer: connection failure or timeout.
    #[error("Microsoft's token endpoint could not be reached: {0}")]
    Unreachable(String),
    /// An answer that is neither a token nor a Microsoft error.
    #[error("unexpected answer from Microsoft's token endpoint: {0}")]
    Unexpected(String),
}

impl TokenRequestError {
    /// What the error means for the service.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Microsoft(error) => error.class(),
            Self::Unreachable(_) | Self::Unexpected(_) => ErrorClass::Transient,
        }
    }
}

/// A sign-in link and what the callback needs to finish it.
#[derive(Debug)]
pub struct AuthorizationRequest {
    pub url: Url,
    /// The `state` parameter (256 random bits).
    pub state: SecretString,
    pub pkce_verifier: SecretString,
}

/// Talks to `{authority}/{tenant}/oauth2/v2.0/…`.
#[derive(Debug)]
pub struct IdentityClient {
    http: reqwest::Client,
    authority: Url,
    tenant: TenantId,
    client_id: ClientId,
    redirect_uri: String,
    scopes: GraphScopes,
    secret: Arc<ClientSecretProvider>,
}

impl IdentityClient {
    /// A client for the configured app registration. `http` must not follow redirects.
    pub fn new(
        http: reqwest::Client,
        authority: Url,
        azure: &AzureSettings,
        redirect_uri: String,
        secret: Arc<ClientSecretProvider>,
    ) -> Self {
        Self {
            http,
            authority,
            tenant: azure.tenant.clone(),
            client_id: azure.client_id.clone(),
            redirect_uri,
            scopes: azure.scopes.clone(),
            secret,
        }
    }

    /// The HTTP client the identity platform needs: TLS, timeouts, no redirects.
    pub fn http_client() -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(30))
            .user_agent(concat!("graph-mailer/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    /// The redirect URI registered for the callback.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// The configured tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The configured client ID.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    /// The `iss` of an id_token this authority issues for tenant `tid`.
    pub fn issuer_for(&self, tid: &str) -> String {
        format!(
            "{}/{tid}/v2.0",
            self.authority.as_str().trim_end_matches('/')
        )
    }

    /// The Graph scopes the service asks for.
    pub fn scopes(&self) -> &GraphScopes {
        &self.scopes
    }

    fn endpoint(&self, path: &str) -> String {
        format!(
            "{}/{}/{path}",
            self.authority.as_str().trim_end_matches('/'),
            self.tenant
        )
    }

    fn oauth_client(&self, secret: &SecretString) -> Result<OAuthClient, TokenRequestError> {
        let invalid = |e: url::ParseError| TokenRequestError::Unexpected(e.to_string());
        Ok(
            oauth2::Client::new(oauth2::ClientId::new(self.client_id.to_string()))
                .set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()))
                .set_auth_uri(
                    AuthUrl::new(self.endpoint("oauth2/v2.0/authorize")).map_err(invalid)?,
                )
                .set_token_uri(TokenUrl::new(self.endpoint("oauth2/v2.0/token")).map_err(invalid)?)
                .set_redirect_uri(RedirectUrl::new(self.redirect_uri.clone()).map_err(invalid)?)
                .set_auth_type(AuthType::RequestBody),
        )
    }

    /// A sign-in link for `mailbox`: PKCE S256, a 256-bit state, `login_hint`, and
    /// `prompt=consent` when asked.
    pub fn authorize_url(
        &self,
        mailbox: &Mailbox,
        force_consent: bool,
    ) -> Result<AuthorizationRequest, TokenRequestError> {
        let mut extra = vec![("login_hint", mailbox.as_str())];
        if force_consent {
            extra.push(("prompt", "consent"));
        }
        self.authorization_request(self.scopes.request_scopes(), &extra)
    }

    /// A link that signs an administrator in to the admin page: OpenID Connect only (`openid
    /// profile`), with PKCE and a `nonce` the id_token must echo. The account picker shows, so an
    /// administrator signed in as a mailbox can choose their own account.
    pub fn sign_in_url(&self, nonce: &str) -> Result<AuthorizationRequest, TokenRequestError> {
        let scopes = vec!["openid".to_owned(), "profile".to_owned()];
        self.authorization_request(scopes, &[("nonce", nonce), ("prompt", "select_account")])
    }

    /// An authorization request for `scopes`: PKCE S256, a 256-bit state, the answer in the
    /// query string, and `extra` parameters.
    fn authorization_request(
        &self,
        scopes: Vec<String>,
        extra: &[(&str, &str)],
    ) -> Result<AuthorizationRequest, TokenRequestError> {
        let client = self.oauth_client(&self.secret.current())?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = random_token();
        let state_for_url = state.clone();
        let mut request = client
            .authorize_url(move || CsrfToken::new(state_for_url))
            .add_scopes(scopes.into_iter().map(Scope::new))
            .set_pkce_challenge(challenge)
            .add_extra_param("response_mode", "query");
        for (name, value) in extra {
            request = request.add_extra_param(*name, *value);
        }
        let (url, _) = request.url();
        Ok(AuthorizationRequest {
            url,
            state: SecretString::from(state),
            pkce_verifier: SecretString::from(verifier.secret().to_owned()),
        })
    }

    /// Redeems an authorization code with its PKCE verifier.
    pub async fn redeem_code(
        &self,
        code: &str,
        pkce_verifier: &SecretString,
    ) -> Result<TokenGrant, TokenRequestError> {
        self.with_current_secret(|client| async move {
            client
                .exchange_code(AuthorizationCode::new(code.to_owned()))
                .set_pkce_verifier(PkceCodeVerifier::new(
                    pkce_verifier.expose_secret().to_owned(),
                ))
                .request_async(&self.http)
                .await
        })
        .await
    }

    /// Redeems a refresh token for the scopes the connection was `granted` (short names).
    /// The grant carries the rotated refresh token.
    ///
    /// A refresh may ask for the original consent "or a subset" (authorization code flow
    /// page): asking for a permission added to the configuration since then fails with
    /// AADSTS65001 although the granted ones still work.
    pub async fn refresh(
        &self,
        refresh_token: &SecretString,
        granted: &[String],
    ) -> Result<TokenGrant, TokenRequestError> {
        let scopes = if granted.is_empty() {
            // A connection stored before scopes were kept: the configuration is all we know.
            self.scopes.request_scopes()
        } else {
            self.scopes.request_scopes_for(granted)
        };
        let scopes = &scopes;
        self.with_current_secret(|client| async move {
            client
                .exchange_refresh_token(&RefreshToken::new(
                    refresh_token.expose_secret().to_owned(),
                ))
                .add_scopes(scopes.iter().cloned().map(Scope::new))
                .request_async(&self.http)
                .await
        })
        .await
    }

    /// Runs a token request; when Microsoft rejects the client secret, re-reads a secret file
    /// once and, if the secret changed, tries again with the new one.
    async fn with_current_secret<F, Fut, E>(
        &self,
        request: F,
    ) -> Result<TokenGrant, TokenRequestError>
    where
        F: Fn(OAuthClient) -> Fut,
        Fut: std::future::Future<
                Output = Result<MicrosoftTokenResponse, RequestTokenError<E, MicrosoftError>>,
            >,
        E: std::error::Error + 'static,
    {
        let first = request(self.oauth_client(&self.secret.current())?)
            .await
            .map_err(convert_error);
        match first {
            Err(error) if error.class() == ErrorClass::ClientSecret => match self.secret.reload() {
                Ok(true) => request(self.oauth_client(&self.secret.current())?)
                    .await
                    .map_err(convert_error)
                    .map(grant_from),
                _ => Err(error),
            },
            other => other.map(grant_from),
        }
    }

    /// Fetches the tenant's OpenID discovery document: proves the authority answers and the
    /// tenant exists. Returns the issuer.
    pub async fn discover(&self) -> Result<String, String> {
        let url = self.endpoint("v2.0/.well-known/openid-configuration");
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url} cannot be reached: {e}"))?;
        let status = response.status();
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| format!("{url} answered {status} without JSON: {e}"))?;
        if !status.is_success() {
            let error: MicrosoftError = serde_json::from_value(body).unwrap_or_default();
            return Err(format!(
                "{url} answered {status}: {} — check {}",
                error.summary(),
                variables::TENANT_ID
            ));
        }
        body.get("issuer")
            .and_then(|i| i.as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("{url} answered without an issuer"))
    }
}

/// 256 random bits, base64url: states, nonces, session ids.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

fn convert_error<E: std::error::Error + 'static>(
    error: RequestTokenError<E, MicrosoftError>,
) -> TokenRequestError {
    match error {
        RequestTokenError::ServerResponse(error) => TokenRequestError::Microsoft(Box::new(error)),
        RequestTokenError::Request(error) => {
            let mut message = error.to_string();
            let mut source = error.source();
            while let Some(inner) = source {
                message = format!("{message}: {inner}");
                source = inner.source();
            }
            TokenRequestError::Unreachable(message)
        }
        RequestTokenError::Parse(error, _) => TokenRequestError::Unexpected(error.to_string()),
        RequestTokenError::Other(message) => TokenRequestError::Unexpected(message),
    }
}

/// When Microsoft leaves out `expires_in` (it never should), assume a short life so the token
/// is refreshed early rather than used after it expired.
const FALLBACK_LIFETIME_SECONDS: i64 = 15 * 60;

fn grant_from(response: MicrosoftTokenResponse) -> TokenGrant {
    TokenGrant {
        access_token: SecretString::from(response.access_token().secret().to_owned()),
        expires_in: response
            .expires_in()
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .unwrap_or_else(|| chrono::Duration::seconds(FALLBACK_LIFETIME_SECONDS)),
        refresh_token: response
            .refresh_token()
            .map(|t| SecretString::from(t.secret().to_owned())),
        scopes: response
            .scopes()
            .map(|scopes| scopes.iter().map(|s| s.to_string()).collect()),
        id_token: response.id_token().map(str::to_owned),
    }
}
