//! A fake Microsoft identity platform (v2.0 endpoints), written from Microsoft's documentation
//! (see `../shared/reference/microsoft-protocol.md` §1).
//!
//! It is stricter than Microsoft where strictness catches bugs: a refresh token is revoked the
//! moment it is used (Microsoft keeps it valid, but a service that keeps using the first refresh
//! token breaks after 90 days), codes are single use and bound to their PKCE challenge, redirect
//! URIs must match exactly. Error bodies have Microsoft's exact shape. Faults can be switched on
//! to reproduce revoked grants, MFA, Conditional Access, bad secrets and outages.
//!
//! As Microsoft does, it issues tokens only for the Graph resource it serves (a national cloud
//! refuses the global one, AADSTS500011), refuses a refresh that asks for more than the
//! original consent (AADSTS65001: "equivalent to or a subset of", auth-code flow page), and
//! knows users whose user principal name differs from their primary SMTP address and who have
//! aliases (`proxyAddresses`).

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

/// A user of the tenant: its object id, its sign-in name, its primary SMTP address and its
/// aliases, as `GET /me?$select=id,mail,userPrincipalName,proxyAddresses` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub oid: String,
    pub upn: String,
    pub mail: String,
    /// `SMTP:` for the primary address, `smtp:` for aliases.
    pub proxy_addresses: Vec<String>,
}

impl User {
    /// A user whose sign-in name and address are the same (the usual test user).
    pub fn simple(address: &str) -> Self {
        Self {
            oid: format!("{:x}", Sha256::digest(address.to_lowercase().as_bytes()))[..32]
                .to_owned(),
            upn: address.to_owned(),
            mail: address.to_owned(),
            proxy_addresses: vec![format!("SMTP:{address}")],
        }
    }

    /// Every address mail may come from: the primary and the aliases.
    pub fn smtp_addresses(&self) -> Vec<String> {
        let mut addresses = vec![self.mail.to_lowercase()];
        for proxy in &self.proxy_addresses {
            if let Some(address) = proxy
                .strip_prefix("SMTP:")
                .or_else(|| proxy.strip_prefix("smtp:"))
            {
                addresses.push(address.to_lowercase());
            }
        }
        addresses
    }

    fn answers_to(&self, name: &str) -> bool {
        let name = name.to_lowercase();
        self.upn.to_lowercase() == name || self.smtp_addresses().contains(&name)
    }
}

/// Access tokens issued and the tenant's users, shared with the fake Graph so it can check
/// bearer tokens and answer `/me`.
#[derive(Clone, Default)]
pub struct TokenRegistry(Arc<Mutex<Registry>>);

#[derive(Default)]
struct Registry {
    tokens: HashMap<String, IssuedToken>,
    users: Vec<User>,
}

#[derive(Clone, Debug)]
pub struct IssuedToken {
    /// The user's principal name.
    pub account: String,
    pub user: User,
    pub scopes: Vec<String>,
    pub revoked: bool,
}

impl TokenRegistry {
    pub fn lookup(&self, token: &str) -> Option<IssuedToken> {
        self.0
            .lock()
            .unwrap()
            .tokens
            .get(token)
            .cloned()
            .filter(|t| !t.revoked)
    }
    fn insert(&self, token: String, issued: IssuedToken) {
        self.0.lock().unwrap().tokens.insert(token, issued);
    }
    /// Makes every access token invalid (as if all expired): Graph answers 401.
    pub fn revoke_all(&self) {
        for token in self.0.lock().unwrap().tokens.values_mut() {
            token.revoked = true;
        }
    }
    /// Adds a user to the tenant.
    pub fn add_user(&self, user: User) {
        self.0.lock().unwrap().users.push(user);
    }
    /// Removes the users who answer to `name` (an account deleted, its address free for
    /// another).
    pub fn remove_user(&self, name: &str) {
        self.0.lock().unwrap().users.retain(|u| !u.answers_to(name));
    }
    /// The user who answers to `name` (UPN or any SMTP address); one is made up for a name
    /// nobody answers to, with the name as UPN and address.
    pub fn user(&self, name: &str) -> User {
        let mut registry = self.0.lock().unwrap();
        if let Some(user) = registry.users.iter().find(|u| u.answers_to(name)) {
            return user.clone();
        }
        let user = User::simple(name);
        registry.users.push(user.clone());
        user
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
    /// invalid_grant AADSTS53003: blocked by Conditional Access (on every refresh, whoever
    /// signs in again: only an administrator's policy change helps).
    ConditionalAccess,
    /// invalid_request AADSTS50196: the client is looping.
    LoopDetected,
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
                90055,
                "The server is temporarily unavailable. Please try again later.",
                None,
            ),
            Self::ConditionalAccess => error(
                400,
                "invalid_grant",
                53003,
                "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
                Some("message_only"),
            ),
            Self::LoopDetected => error(
                400,
                "invalid_request",
                50196,
                "The server terminated an operation because it encountered a client request loop.",
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
    /// The id_token's nonce is another than the sign-in asked for (a token replayed from
    /// another sign-in).
    foreign_nonce: bool,
    access_token_lifetime: i64,
    expires_in_as_string: bool,
    refresh_fault: Option<Fault>,
    refresh_faults_left: Option<usize>,
    refresh_latency: Duration,
    /// What every authorization-code redemption answers instead of tokens.
    code_fault: Option<Fault>,
    /// The Graph resource tokens are issued for (the fake Graph's base URL).
    graph_resource: String,
    /// The id_token's `iss`: `{authority}/{tenant}/v2.0`.
    issuer: String,
}

struct PendingCode {
    account: User,
    /// The authorize request's `nonce`, which the id_token echoes (OpenID Connect Core 2).
    nonce: Option<String>,
    redirect_uri: String,
    scope: String,
    code_challenge: String,
    used: bool,
}

struct RefreshGrant {
    account: User,
    scope: String,
    revoked: bool,
    /// Which sign-in (1, 2, …) the grant descends from.
    sign_in: usize,
}

#[derive(Default)]
struct Inner {
    settings: Settings,
    codes: HashMap<String, PendingCode>,
    refresh_tokens: HashMap<String, RefreshGrant>,
    authorize_requests: Vec<HashMap<String, String>>,
    token_requests: Vec<(String, bool)>,
    /// Codes redeemed so far.
    sign_ins: usize,
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
        let base_url = format!("http://{addr}");
        {
            let mut inner = inner.lock().unwrap();
            inner.settings.issuer = format!("{base_url}/{TENANT}/v2.0");
            inner.settings.graph_resource = "https://graph.microsoft.com".to_owned();
        }
        Self {
            base_url,
            tokens,
            inner,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap())
    }

    /// The Graph resource this identity platform serves, as Microsoft's clouds each serve their
    /// own (`https://graph.microsoft.com`, `https://graph.microsoft.us`, …).
    pub fn set_graph_resource(&self, resource: &str) {
        self.with(|i| i.settings.graph_resource = resource.trim_end_matches('/').to_owned());
    }
    /// Adds a user to the tenant.
    pub fn add_user(&self, user: User) {
        self.tokens.add_user(user);
    }
    /// Replaces every user who answers to `user`'s addresses with `user` (a mailbox given to a
    /// new account).
    pub fn replace_user(&self, user: User) {
        self.tokens.remove_user(&user.upn);
        self.tokens.remove_user(&user.mail);
        self.tokens.add_user(user);
    }
    /// The `iss` claim of id_tokens from now on (a token from elsewhere).
    pub fn set_issuer(&self, issuer: &str) {
        self.with(|i| i.settings.issuer = issuer.to_owned());
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
    /// Id_tokens carry a nonce other than the one the sign-in request sent.
    pub fn answer_with_a_foreign_nonce(&self) {
        self.with(|i| i.settings.foreign_nonce = true);
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
    /// Every code redemption fails with `fault` (None: none do), as the token endpoint does
    /// during an outage (503 temporarily_unavailable).
    pub fn fail_code_redemptions(&self, fault: Option<Fault>) {
        self.with(|i| i.settings.code_fault = fault);
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
        self.tokens
            .0
            .lock()
            .unwrap()
            .tokens
            .keys()
            .cloned()
            .collect()
    }
    /// Every authorization code ever issued.
    pub fn issued_codes(&self) -> Vec<String> {
        self.with(|i| i.codes.keys().cloned().collect())
    }
    /// Which sign-in (1 for the first code redeemed, 2 for the next …) a refresh token
    /// descends from.
    pub fn sign_in_of(&self, refresh_token: &str) -> Option<usize> {
        self.with(|i| i.refresh_tokens.get(refresh_token).map(|g| g.sign_in))
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
    if let Some(refused) = foreign_resource(&inner.settings.graph_resource, &scope) {
        return refused;
    }
    // "prompt: Optional. Indicates the type of user interaction that is required. Valid values
    // are login, none, consent, and select_account" (and create, for sign-up).
    let prompt = get("prompt");
    if !["", "login", "none", "consent", "select_account", "create"].contains(&prompt.as_str()) {
        return error(
            400,
            "invalid_request",
            90023,
            &format!("Invalid prompt value '{prompt}'."),
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
    let name = inner
        .settings
        .sign_in_as
        .clone()
        .unwrap_or_else(|| get("login_hint"));
    let account = state.tokens.user(&name);
    let code = format!("code-{}", uuid::Uuid::new_v4());
    inner.codes.insert(
        code.clone(),
        PendingCode {
            account,
            nonce: params.get("nonce").cloned(),
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
            if let Some(fault) = inner.settings.code_fault {
                return fault.response();
            }
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
            let nonce = pending.nonce.clone();
            inner.sign_ins += 1;
            let sign_in = inner.sign_ins;
            let grant = Grant {
                requested: &scope,
                consent: &scope,
                sign_in,
                nonce: nonce.as_deref(),
            };
            issue(&mut inner, &state.tokens, &account, grant)
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
            // "The scopes requested in this leg must be equivalent to or a subset of the scopes
            // requested in the original authorization_code request leg."
            let requested = get("scope");
            if requested.trim().is_empty() {
                return error(
                    400,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'scope'.",
                    None,
                );
            }
            let consented: Vec<String> = grant.scope.split(' ').map(|s| s.to_lowercase()).collect();
            if requested
                .split(' ')
                .filter(|s| !s.is_empty())
                .any(|s| !consented.contains(&s.to_lowercase()))
            {
                return Fault::ConsentRequired.response();
            }
            // Stricter than Microsoft: the used refresh token stops working.
            grant.revoked = true;
            let (account, consent, sign_in) =
                (grant.account.clone(), grant.scope.clone(), grant.sign_in);
            let grant = Grant {
                requested: &requested,
                consent: &consent,
                sign_in,
                nonce: None,
            };
            issue(&mut inner, &state.tokens, &account, grant)
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

/// Issues tokens for `requested_scope`; the refresh token remembers `consent`, what the user
/// consented to (a later refresh may ask for that, or less).
/// What a token response is for.
struct Grant<'a> {
    requested: &'a str,
    consent: &'a str,
    sign_in: usize,
    /// The sign-in request's nonce, echoed in the id_token.
    nonce: Option<&'a str>,
}

fn issue(inner: &mut Inner, tokens: &TokenRegistry, account: &User, grant: Grant<'_>) -> Response {
    let (requested_scope, consent, sign_in) = (grant.requested, grant.consent, grant.sign_in);
    let settings = &inner.settings;
    let resource = format!("{}/", settings.graph_resource);
    let granted = settings.granted_scopes.clone().unwrap_or_else(|| {
        requested_scope
            .split(' ')
            .filter(|s| {
                s.starts_with(&resource)
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
        .map(|s| s.trim_start_matches(&resource).to_owned())
        .collect();
    tokens.insert(
        access_token.clone(),
        IssuedToken {
            account: account.upn.clone(),
            user: account.clone(),
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
        let mut claims = id_token_claims(account, CLIENT_ID, TENANT, &settings.issuer);
        if let Some(nonce) = grant.nonce {
            claims["nonce"] = if settings.foreign_nonce {
                json!(format!("{nonce}-from-another-sign-in"))
            } else {
                json!(nonce)
            };
        }
        body["id_token"] = json!(encode_id_token(&claims));
    }
    let with_refresh =
        !settings.omit_refresh_token && granted.split(' ').any(|s| s == "offline_access");
    if with_refresh {
        let refresh_token = format!("rt-{}", uuid::Uuid::new_v4());
        inner.refresh_tokens.insert(
            refresh_token.clone(),
            RefreshGrant {
                account: account.clone(),
                scope: consent.to_owned(),
                revoked: false,
                sign_in,
            },
        );
        body["refresh_token"] = json!(refresh_token);
    }
    (StatusCode::OK, Json(body)).into_response()
}

/// A Graph scope for another cloud's resource: Microsoft has no such resource here.
fn foreign_resource(graph_resource: &str, scope: &str) -> Option<Response> {
    let foreign = scope
        .split(' ')
        .find(|s| s.contains("://") && !s.starts_with(&format!("{graph_resource}/")))?;
    let resource = foreign.rsplit_once('/').map(|(r, _)| r).unwrap_or(foreign);
    Some(error(
        400,
        "invalid_resource",
        500011,
        &format!(
            "The resource principal named {resource} was not found in the tenant named {TENANT}."
        ),
        None,
    ))
}

/// An unsigned id_token (the service need not verify signatures of tokens it received directly
/// from the token endpoint) for any audience, tenant and issuer.
pub fn id_token_for(account: &str, aud: &str, tid: &str) -> String {
    let issuer = format!("https://login.microsoftonline.com/{tid}/v2.0");
    id_token_of(&User::simple(account), aud, tid, &issuer)
}

fn id_token_of(user: &User, aud: &str, tid: &str, issuer: &str) -> String {
    encode_id_token(&id_token_claims(user, aud, tid, issuer))
}

fn encode_id_token(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"none"}"#);
    format!("{header}.{}.", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

fn id_token_claims(user: &User, aud: &str, tid: &str, issuer: &str) -> Value {
    json!({
        "aud": aud,
        "iss": issuer,
        "iat": chrono::Utc::now().timestamp(),
        "exp": chrono::Utc::now().timestamp() + 3600,
        "tid": tid,
        "oid": user.oid,
        // Mutable and not for authorisation (ID token claims reference): the sign-in name.
        "preferred_username": user.upn,
        "email": user.mail,
        "name": user.upn.split('@').next().unwrap_or_default(),
        "ver": "2.0",
    })
}

async fn discovery(Path(tenant): Path<String>, State(state): State<AppState>) -> Response {
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
        "issuer": state.inner.lock().unwrap().settings.issuer.clone(),
        "authorization_endpoint": format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"),
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
    });
    Json(value).into_response()
}
