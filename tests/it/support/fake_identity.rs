//! A fake Microsoft identity platform (v2.0 endpoints), written from Microsoft's documentation
//! (see `../shared/reference/microsoft-protocol.md` §1).
//!
//! It is stricter than Microsoft where strictness catches bugs: a refresh token is revoked the
//! moment it is used (Microsoft keeps it valid, but a service that keeps using the first refresh
//! token breaks after 90 days), codes are single use and bound to their PKCE challenge, redirect
//! URIs must match exactly. Error bodies have Microsoft's exact shape. Faults can be switched on
//! to reproduce revoked grants, MFA, bad secrets and outages.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Form, Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

pub const TENANT: &str = "11111111-2222-3333-4444-555555555555";
pub const CLIENT_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
pub const CLIENT_SECRET: &str = "fake~Secret.Value_0123456789abcdefghij";

/// Access tokens issued, shared with the fake Graph so it can check bearer tokens.
#[derive(Clone, Default)]
pub struct TokenRegistry(Arc<Mutex<HashMap<String, IssuedToken>>>);

#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub account: String,
    pub scopes: Vec<String>,
    pub revoked: bool,
}

impl TokenRegistry {
    pub fn lookup(&self, token: &str) -> Option<IssuedToken> {
        self.0
            .lock()
            .unwrap()
            .get(token)
            .cloned()
            .filter(|t| !t.revoked)
    }
    fn insert(&self, token: String, issued: IssuedToken) {
        self.0.lock().unwrap().insert(token, issued);
    }
    /// Makes every access token invalid (as if all expired): Graph answers 401.
    pub fn revoke_all(&self) {
        for token in self.0.lock().unwrap().values_mut() {
            token.revoked = true;
        }
    }
}

/// A fault the token endpoint answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// invalid_grant AADSTS70008: the refresh token expired (90 days).
    ExpiredGrant,
    /// invalid_grant AADSTS50173: the grant was revoked.
    RevokedGrant,
    /// invalid_grant AADSTS50076 with suberror basic_action: MFA required.
    MfaRequired,
    /// invalid_grant AADSTS65001 with suberror consent_required.
    ConsentRequired,
    /// invalid_client AADSTS7000215 (HTTP 401).
    BadSecret,
    /// invalid_client AADSTS7000222 (HTTP 401).
    ExpiredSecret,
    /// temporarily_unavailable (HTTP 503).
    Unavailable,
}

impl Fault {
    fn response(self) -> Response {
        match self {
            Self::ExpiredGrant => error(
                400,
                "invalid_grant",
                70008,
                "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
                None,
            ),
            Self::RevokedGrant => error(
                400,
                "invalid_grant",
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is needed.",
                None,
            ),
            Self::MfaRequired => error(
                400,
                "invalid_grant",
                50076,
                "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access this resource.",
                Some("basic_action"),
            ),
            Self::ConsentRequired => error(
                400,
                "invalid_grant",
                65001,
                "The user or administrator has not consented to use the application.",
                Some("consent_required"),
            ),
            Self::BadSecret => error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
                None,
            ),
            Self::ExpiredSecret => error(
                401,
                "invalid_client",
                7000222,
                "The provided client secret keys for app are expired.",
                None,
            ),
            Self::Unavailable => error(
                503,
                "temporarily_unavailable",
                50196,
                "The server is temporarily unavailable. Please try again later.",
                None,
            ),
        }
    }
}

#[derive(Default)]
struct Settings {
    redirect_uris: Vec<String>,
    secrets: Vec<String>,
    sign_in_as: Option<String>,
    decline_consent: bool,
    granted_scopes: Option<String>,
    omit_refresh_token: bool,
    omit_id_token: bool,
    access_token_lifetime: i64,
    expires_in_as_string: bool,
    refresh_fault: Option<Fault>,
    refresh_faults_left: Option<usize>,
    refresh_latency: Duration,
}

struct PendingCode {
    account: String,
    redirect_uri: String,
    scope: String,
    code_challenge: String,
    used: bool,
}

struct RefreshGrant {
    account: String,
    scope: String,
    revoked: bool,
}

#[derive(Default)]
struct Inner {
    settings: Settings,
    codes: HashMap<String, PendingCode>,
    refresh_tokens: HashMap<String, RefreshGrant>,
    authorize_requests: Vec<HashMap<String, String>>,
    token_requests: Vec<(String, bool)>,
}

/// The running fake.
#[derive(Clone)]
pub struct FakeIdentity {
    pub base_url: String,
    pub tokens: TokenRegistry,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Clone)]
struct AppState {
    inner: Arc<Mutex<Inner>>,
    tokens: TokenRegistry,
}

impl FakeIdentity {
    pub async fn start(tokens: TokenRegistry) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            settings: Settings {
                secrets: vec![CLIENT_SECRET.to_owned()],
                access_token_lifetime: 3900,
                ..Default::default()
            },
            ..Default::default()
        }));
        let state = AppState {
            inner: inner.clone(),
            tokens: tokens.clone(),
        };
        let app = Router::new()
            .route("/{tenant}/oauth2/v2.0/authorize", get(authorize))
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                get(discovery),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base_url: format!("http://{addr}"),
            tokens,
            inner,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap())
    }

    /// Adds a redirect URI to the app registration.
    pub fn register_redirect_uri(&self, uri: &str) {
        self.with(|i| i.settings.redirect_uris.push(uri.to_owned()));
    }
    /// Who signs in when the browser opens the link (default: the login_hint).
    pub fn sign_in_as(&self, account: &str) {
        self.with(|i| i.settings.sign_in_as = Some(account.to_owned()));
    }
    /// The user declines the consent screen.
    pub fn decline_consent(&self) {
        self.with(|i| i.settings.decline_consent = true);
    }
    /// Overrides the granted `scope` of token responses.
    pub fn grant_scopes(&self, scope: &str) {
        self.with(|i| i.settings.granted_scopes = Some(scope.to_owned()));
    }
    pub fn omit_refresh_token(&self) {
        self.with(|i| i.settings.omit_refresh_token = true);
    }
    pub fn omit_id_token(&self) {
        self.with(|i| i.settings.omit_id_token = true);
    }
    /// Access token lifetime in seconds, and whether `expires_in` is sent as a string.
    pub fn set_access_token_lifetime(&self, seconds: i64, as_string: bool) {
        self.with(|i| {
            i.settings.access_token_lifetime = seconds;
            i.settings.expires_in_as_string = as_string;
        });
    }
    /// Every refresh fails with `fault` (None: none do).
    pub fn fail_refreshes(&self, fault: Option<Fault>) {
        self.with(|i| {
            i.settings.refresh_fault = fault;
            i.settings.refresh_faults_left = None;
        });
    }
    /// The next `count` refreshes fail with `fault`.
    pub fn fail_next_refreshes(&self, count: usize, fault: Fault) {
        self.with(|i| {
            i.settings.refresh_fault = Some(fault);
            i.settings.refresh_faults_left = Some(count);
        });
    }
    /// How long the token endpoint takes to answer a refresh.
    pub fn set_refresh_latency(&self, latency: Duration) {
        self.with(|i| i.settings.refresh_latency = latency);
    }
    /// The client secrets the app registration accepts.
    pub fn accept_only_secret(&self, secret: &str) {
        self.with(|i| i.settings.secrets = vec![secret.to_owned()]);
    }
    /// Token requests so far with this grant type.
    pub fn token_requests(&self, grant_type: &str) -> usize {
        self.with(|i| {
            i.token_requests
                .iter()
                .filter(|(g, _)| g == grant_type)
                .count()
        })
    }
    /// Successful refreshes so far.
    pub fn successful_refreshes(&self) -> usize {
        self.with(|i| {
            i.token_requests
                .iter()
                .filter(|(g, ok)| g == "refresh_token" && *ok)
                .count()
        })
    }
    /// The query parameters of every authorize request.
    pub fn authorize_requests(&self) -> Vec<HashMap<String, String>> {
        self.with(|i| i.authorize_requests.clone())
    }
    /// Refresh tokens issued and not yet used or revoked.
    pub fn live_refresh_tokens(&self) -> Vec<String> {
        self.with(|i| {
            i.refresh_tokens
                .iter()
                .filter(|(_, g)| !g.revoked)
                .map(|(t, _)| t.clone())
                .collect()
        })
    }
    /// Every refresh token ever issued.
    pub fn issued_refresh_tokens(&self) -> Vec<String> {
        self.with(|i| i.refresh_tokens.keys().cloned().collect())
    }
    /// Every access token ever issued.
    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.tokens.0.lock().unwrap().keys().cloned().collect()
    }
    /// Every authorization code ever issued.
    pub fn issued_codes(&self) -> Vec<String> {
        self.with(|i| i.codes.keys().cloned().collect())
    }
    /// Revokes every refresh grant (as an administrator would).
    pub fn revoke_refresh_tokens(&self) {
        self.with(|i| i.refresh_tokens.values_mut().for_each(|g| g.revoked = true));
    }
}

fn ids() -> (String, String) {
    (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    )
}

/// An error body exactly as Microsoft shapes it.
pub fn error(
    status: u16,
    error: &str,
    code: u64,
    message: &str,
    suberror: Option<&str>,
) -> Response {
    let (trace_id, correlation_id) = ids();
    let timestamp = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    let mut body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {message} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}"),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    if let Some(suberror) = suberror {
        body["suberror"] = json!(suberror);
        body["claims"] =
            json!("{\"access_token\":{\"capolids\":{\"essential\":true,\"values\":[\"x\"]}}}");
    }
    let mut response = (StatusCode::from_u16(status).unwrap(), Json(body)).into_response();
    response
        .headers_mut()
        .insert("x-ms-request-id", HeaderValue::from_str(&trace_id).unwrap());
    response
}

/// Microsoft's answer when the tenant or the application is unknown, if either is.
fn unknown_app(tenant: &str, client_id: Option<&String>) -> Option<Response> {
    if tenant != TENANT {
        return Some(error(
            400,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
            None,
        ));
    }
    if client_id.map(String::as_str) != Some(CLIENT_ID) {
        return Some(error(
            400,
            "unauthorized_client",
            700016,
            "Application was not found in the directory.",
            None,
        ));
    }
    None
}

async fn authorize(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let mut inner = state.inner.lock().unwrap();
    inner.authorize_requests.push(params.clone());
    if let Some(refused) = unknown_app(&tenant, params.get("client_id")) {
        return refused;
    }
    let get = |k: &str| params.get(k).cloned().unwrap_or_default();
    if !inner.settings.redirect_uris.contains(&get("redirect_uri")) {
        return error(
            400,
            "invalid_request",
            50011,
            "The redirect URI specified in the request does not match the redirect URIs configured for the application.",
            None,
        );
    }
    let scope = get("scope");
    let complete = get("response_type") == "code"
        && get("response_mode") == "query"
        && !get("state").is_empty()
        && get("code_challenge_method") == "S256"
        && get("code_challenge").len() >= 43
        && scope.split(' ').any(|s| s == "openid");
    if !complete {
        return error(
            400,
            "invalid_request",
            900144,
            "The request body must contain the required parameters (response_type, state, PKCE S256 code_challenge, openid scope).",
            None,
        );
    }
    let redirect = Url::parse(&get("redirect_uri")).unwrap();
    let mut target = redirect.clone();
    if inner.settings.decline_consent {
        target
            .query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair(
                "error_description",
                "AADSTS65004: User declined to consent to access the app.",
            )
            .append_pair("state", &get("state"));
        return Redirect::to(target.as_str()).into_response();
    }
    let account = inner
        .settings
        .sign_in_as
        .clone()
        .unwrap_or_else(|| get("login_hint"));
    let code = format!("code-{}", uuid::Uuid::new_v4());
    inner.codes.insert(
        code.clone(),
        PendingCode {
            account,
            redirect_uri: get("redirect_uri"),
            scope,
            code_challenge: get("code_challenge"),
            used: false,
        },
    );
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &get("state"))
        .append_pair("session_state", &uuid::Uuid::new_v4().to_string());
    Redirect::to(target.as_str()).into_response()
}

async fn token(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let grant_type = form.get("grant_type").cloned().unwrap_or_default();
    let latency = state.inner.lock().unwrap().settings.refresh_latency;
    if grant_type == "refresh_token" && !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let response = token_inner(&state, &tenant, &headers, &form, &grant_type);
    let ok = response.status().is_success();
    state
        .inner
        .lock()
        .unwrap()
        .token_requests
        .push((grant_type, ok));
    response
}

fn token_inner(
    state: &AppState,
    tenant: &str,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    grant_type: &str,
) -> Response {
    let mut inner = state.inner.lock().unwrap();
    if let Some(refused) = unknown_app(tenant, form.get("client_id")) {
        return refused;
    }
    if headers.get(header::AUTHORIZATION).is_some() {
        return error(
            401,
            "invalid_client",
            7000218,
            "Credentials are expected in the request body (client_secret) for this test.",
            None,
        );
    }
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    if !inner.settings.secrets.contains(&get("client_secret")) {
        return Fault::BadSecret.response();
    }
    match grant_type {
        "authorization_code" => {
            let code = get("code");
            let Some(pending) = inner.codes.get_mut(&code) else {
                return error(
                    400,
                    "invalid_grant",
                    70000,
                    "The provided value for the 'code' parameter is not valid.",
                    None,
                );
            };
            if pending.used {
                return error(
                    400,
                    "invalid_grant",
                    54005,
                    "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
                    None,
                );
            }
            pending.used = true;
            if get("redirect_uri") != pending.redirect_uri {
                return error(
                    400,
                    "invalid_grant",
                    50011,
                    "The redirect URI does not match the one used in the authorization request.",
                    None,
                );
            }
            let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(get("code_verifier").as_bytes()));
            if challenge != pending.code_challenge {
                return error(
                    400,
                    "invalid_grant",
                    501481,
                    "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                    None,
                );
            }
            let (account, scope) = (pending.account.clone(), pending.scope.clone());
            issue(&mut inner, &state.tokens, &account, &scope)
        }
        "refresh_token" => {
            if let Some(fault) = inner.settings.refresh_fault {
                match inner.settings.refresh_faults_left {
                    Some(0) => {}
                    Some(left) => {
                        inner.settings.refresh_faults_left = Some(left - 1);
                        return fault.response();
                    }
                    None => return fault.response(),
                }
            }
            let presented = get("refresh_token");
            let Some(grant) = inner.refresh_tokens.get_mut(&presented) else {
                return Fault::ExpiredGrant.response();
            };
            if grant.revoked {
                return Fault::ExpiredGrant.response();
            }
            // Stricter than Microsoft: the used refresh token stops working.
            grant.revoked = true;
            let (account, scope) = (grant.account.clone(), grant.scope.clone());
            issue(&mut inner, &state.tokens, &account, &scope)
        }
        other => error(
            400,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{other}'."),
            None,
        ),
    }
}

fn issue(
    inner: &mut Inner,
    tokens: &TokenRegistry,
    account: &str,
    requested_scope: &str,
) -> Response {
    let settings = &inner.settings;
    let granted = settings.granted_scopes.clone().unwrap_or_else(|| {
        requested_scope
            .split(' ')
            .filter(|s| {
                s.starts_with("https://graph.microsoft.com/")
                    || *s == "offline_access"
                    || *s == "openid"
                    || *s == "profile"
                    || *s == "email"
            })
            .collect::<Vec<_>>()
            .join(" ")
    });
    let access_token = format!("at-{}", uuid::Uuid::new_v4());
    let graph_scopes = granted
        .split(' ')
        .map(|s| {
            s.trim_start_matches("https://graph.microsoft.com/")
                .to_owned()
        })
        .collect();
    tokens.insert(
        access_token.clone(),
        IssuedToken {
            account: account.to_owned(),
            scopes: graph_scopes,
            revoked: false,
        },
    );
    let lifetime = settings.access_token_lifetime;
    let mut body = json!({
        "token_type": "Bearer",
        "scope": granted,
        "expires_in": if settings.expires_in_as_string { json!(lifetime.to_string()) } else { json!(lifetime) },
        "ext_expires_in": lifetime,
        "access_token": access_token,
    });
    if !settings.omit_id_token && requested_scope.split(' ').any(|s| s == "openid") {
        body["id_token"] = json!(id_token(account));
    }
    let with_refresh =
        !settings.omit_refresh_token && granted.split(' ').any(|s| s == "offline_access");
    if with_refresh {
        let refresh_token = format!("rt-{}", uuid::Uuid::new_v4());
        inner.refresh_tokens.insert(
            refresh_token.clone(),
            RefreshGrant {
                account: account.to_owned(),
                scope: requested_scope.to_owned(),
                revoked: false,
            },
        );
        body["refresh_token"] = json!(refresh_token);
    }
    (StatusCode::OK, Json(body)).into_response()
}

/// An unsigned id_token (the service need not verify signatures of tokens it received directly
/// from the token endpoint).
pub fn id_token_for(account: &str, aud: &str, tid: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"none"}"#);
    let claims = json!({
        "aud": aud,
        "iss": format!("https://login.microsoftonline.com/{tid}/v2.0"),
        "iat": chrono::Utc::now().timestamp(),
        "exp": chrono::Utc::now().timestamp() + 3600,
        "tid": tid,
        "oid": format!("{:x}", Sha256::digest(account.to_lowercase().as_bytes()))[..32].to_owned(),
        "preferred_username": account,
        "email": account,
        "name": account.split('@').next().unwrap_or_default(),
        "ver": "2.0",
    });
    format!("{header}.{}.", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

fn id_token(account: &str) -> String {
    id_token_for(account, CLIENT_ID, TENANT)
}

async fn discovery(Path(tenant): Path<String>, State(_): State<AppState>) -> Response {
    if tenant != TENANT && tenant != "contoso.onmicrosoft.com" {
        return error(
            400,
            "invalid_tenant",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
            None,
        );
    }
    let value: Value = json!({
        "issuer": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
        "authorization_endpoint": format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"),
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
    });
    Json(value).into_response()
}
