//! Who may enter the admin page, and how.
//!
//! - With Microsoft: OpenID Connect's authorization code flow with PKCE and a nonce, through the
//!   app registration and its one redirect URI (`/oauth2/callback` tells an admin sign-in from a
//!   mailbox's Connect by its `state`). The id_token comes straight from the token endpoint, so
//!   its audience, tenant, issuer and nonce are checked rather than its signature. The account
//!   is admitted when `GRAPH_MAILER_ADMINS` lists its object id or its sign-in name.
//! - With an admin caller's key (`GRAPH_MAILER_ADMIN_KEY_SIGN_IN`, always in the sandbox).
//! - Without credentials when the service runs without callers: its gRPC API is open to anyone
//!   already, and the page is no more open than that.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Form,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use chrono::Duration;
use secrecy::ExposeSecret;

use super::{
    AdminPage, session,
    session::{Entry, SESSION_COOKIE, SIGN_IN_COOKIE, hash, set_cookie},
    session_of, to_sign_in,
};
use crate::{
    audit::{AuditEvent, AuditRecord},
    callers::Credentials,
    oauth::{CallbackParams, ErrorClass, client::random_token, id_token::verify_origin},
    store::{AdminSession, AdminSignIn},
    variables,
};

/// How long a sign-in with Microsoft may take.
const SIGN_IN_LIFETIME_MINUTES: i64 = 10;

/// `GET /admin/sign-in`: the ways in this service offers.
pub(super) async fn page(State(page): State<Arc<AdminPage>>, headers: HeaderMap) -> Response {
    if session_of(&page, &headers).await.is_some() {
        return Redirect::to("/admin").into_response();
    }
    page.sign_in_page(StatusCode::OK, None)
}

impl AdminPage {
    fn sign_in_page(&self, status: StatusCode, problem: Option<String>) -> Response {
        let open = !self.parts.callers.is_enforced();
        let context = minijinja::context! {
            problem,
            microsoft => self.parts.identity.is_some(),
            nobody_listed => self.parts.settings.admin.admins.is_empty(),
            key => self.parts.settings.admin.key_sign_in && !open,
            open,
            admins_variable => variables::ADMINS,
            key_variable => variables::ADMIN_KEY_SIGN_IN,
        };
        self.render(status, "sign_in.html", None, context)
    }

    /// Starts a session for `admin` and sends the browser to the overview.
    async fn start_session(&self, admin: &str, entry: Entry) -> Response {
        let id = random_token();
        let now = self.parts.clock.now();
        let lifetime = self.parts.settings.admin.session_lifetime;
        let expires_at = now + Duration::from_std(lifetime).unwrap_or(Duration::hours(8));
        let how = match &entry {
            Entry::Microsoft { .. } => "microsoft",
            Entry::Key { .. } => "key",
            Entry::Open => "open service",
        };
        let record = AdminSession {
            admin: admin.to_owned(),
            entry: serde_json::to_string(&entry).unwrap_or_default(),
            expires_at,
        };
        if let Err(error) = self
            .parts
            .store
            .insert_admin_session(&hash("session", &id), &record, now)
            .await
        {
            tracing::error!(%error, "cannot store an admin session");
            return self.notice(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "Not signed in",
                "graph-mailer cannot reach its database right now. Try again in a minute.",
            );
        }
        self.parts.audit.record(
            AuditRecord::new(AuditEvent::AdminSignIn, "ok")
                .caller(admin)
                .detail(how.to_owned()),
        );
        let secure = self.secure_cookies();
        let max_age = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        let mut response = Redirect::to("/admin").into_response();
        let cookies = response.headers_mut();
        cookies.append(
            header::SET_COOKIE,
            set_cookie(SESSION_COOKIE, &id, max_age, secure),
        );
        cookies.append(
            header::SET_COOKIE,
            set_cookie(SIGN_IN_COOKIE, "", 0, secure),
        );
        response
    }

    /// Refused sign-ins are audited as refused calls, whose lines the audit log rate-limits:
    /// anyone can try.
    fn refuse_sign_in(&self, who: &str, status: StatusCode, problem: String) -> Response {
        let outcome = if status == StatusCode::FORBIDDEN {
            "permission_denied"
        } else {
            "unauthenticated"
        };
        self.parts.audit.record(
            AuditRecord::new(AuditEvent::Refused, outcome)
                .caller(who)
                .rpc("admin page sign-in"),
        );
        self.sign_in_page(status, Some(problem))
    }

    /// Finishes an admin's sign-in with Microsoft, when the callback's `state` is one; `None`
    /// hands the callback on to Connect.
    pub async fn finish_sign_in(
        &self,
        params: &CallbackParams,
        headers: &HeaderMap,
    ) -> Option<Response> {
        let state = params.state.as_deref().filter(|s| !s.is_empty())?;
        let pending = match self
            .parts
            .store
            .take_admin_sign_in(&hash("state", state))
            .await
        {
            Ok(pending) => pending?,
            Err(error) => {
                tracing::error!(%error, "cannot read an admin sign-in");
                return None;
            }
        };
        Some(self.finish(pending, params, headers).await)
    }

    async fn finish(
        &self,
        pending: AdminSignIn,
        params: &CallbackParams,
        headers: &HeaderMap,
    ) -> Response {
        let refuse =
            |problem: &str| self.refuse_sign_in("-", StatusCode::BAD_REQUEST, problem.to_owned());
        let browser = session::cookie(headers, SIGN_IN_COOKIE).map(|c| hash("browser", c));
        if browser.as_deref() != Some(pending.browser_hash.as_str()) {
            return refuse("This sign-in was started in another browser. Sign in again here.");
        }
        if pending.expires_at <= self.parts.clock.now() {
            return refuse("The sign-in took too long. Sign in again.");
        }
        if let Some(error) = &params.error {
            let description = params.error_description.as_deref().unwrap_or(error);
            let first_line = description.lines().next().unwrap_or(error);
            return refuse(&format!("Microsoft reported: {first_line}"));
        }
        let (Some(identity), Some(code)) = (&self.parts.identity, params.code.as_deref()) else {
            return refuse("Microsoft sent no authorization code. Sign in again.");
        };
        let grant = match identity.redeem_code(code, &pending.pkce_verifier).await {
            Ok(grant) => grant,
            Err(error) => {
                tracing::error!(
                    error = crate::telemetry::redact_addresses(&error.to_string()),
                    "admin sign-in: code redemption failed"
                );
                // Microsoft's outage is not the admin's mistake: say so, with a 503.
                if error.class() == ErrorClass::Transient {
                    return self.sign_in_page(
                        StatusCode::SERVICE_UNAVAILABLE,
                        Some(format!(
                            "Microsoft could not complete the sign-in right now ({error}). Sign in \
                             again in a minute."
                        )),
                    );
                }
                return refuse(&format!("Microsoft did not complete the sign-in: {error}"));
            }
        };
        let claims = match verify_origin(identity, &grant) {
            Ok(claims) => claims,
            Err(problem) => {
                return refuse(&format!("Not signed in: {problem}."));
            }
        };
        let nonce = claims.nonce.as_deref().map(|n| hash("nonce", n));
        if nonce.as_deref() != Some(pending.nonce_hash.as_str()) {
            return refuse("The sign-in's answer was not made for this request. Sign in again.");
        }
        // The sign-in name of an account of this (checked) tenant; `email` may be unverified.
        let account = claims.preferred_username.as_deref();
        let oid = claims.oid.as_deref();
        let who = account.or(oid).unwrap_or("unknown account").to_owned();
        if !self.parts.settings.admin.admits(oid, account) {
            return self.refuse_sign_in(
                &who,
                StatusCode::FORBIDDEN,
                format!(
                    "{who} is not an administrator of this graph-mailer. Ask its operator to add \
                     your sign-in name or object id ({}) to {}.",
                    oid.unwrap_or("-"),
                    variables::ADMINS
                ),
            );
        }
        let entry = Entry::Microsoft {
            object_id: oid.map(str::to_owned),
            account: account.map(str::to_owned),
        };
        self.start_session(&who, entry).await
    }
}

/// `GET /admin/sign-in/microsoft`: off to Microsoft, with this browser remembered.
pub(super) async fn with_microsoft(State(page): State<Arc<AdminPage>>) -> Response {
    let Some(identity) = &page.parts.identity else {
        return page.sign_in_page(
            StatusCode::NOT_FOUND,
            Some("No Microsoft tenant is configured: sign in with an admin caller's key.".into()),
        );
    };
    let nonce = random_token();
    let request = match identity.sign_in_url(&nonce) {
        Ok(request) => request,
        Err(error) => {
            return page.sign_in_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                Some(format!("Cannot build the sign-in link: {error}")),
            );
        }
    };
    let browser = random_token();
    let now = page.parts.clock.now();
    let sign_in = AdminSignIn {
        state_hash: hash("state", request.state.expose_secret()),
        browser_hash: hash("browser", &browser),
        pkce_verifier: request.pkce_verifier,
        nonce_hash: hash("nonce", &nonce),
        created_at: now,
        expires_at: now + Duration::minutes(SIGN_IN_LIFETIME_MINUTES),
    };
    match page.parts.store.insert_admin_sign_in(&sign_in).await {
        Ok(true) => {}
        Ok(false) => {
            return page.sign_in_page(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("Too many sign-ins are under way. Try again in ten minutes.".into()),
            );
        }
        Err(error) => {
            tracing::error!(%error, "cannot store an admin sign-in");
            return page.sign_in_page(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("graph-mailer cannot reach its database right now.".into()),
            );
        }
    }
    let cookie = set_cookie(
        SIGN_IN_COOKIE,
        &browser,
        SIGN_IN_LIFETIME_MINUTES * 60,
        page.secure_cookies(),
    );
    let mut response = Redirect::to(request.url.as_str()).into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// `POST /admin/sign-in/key`: an admin caller's key.
pub(super) async fn with_key(
    State(page): State<Arc<AdminPage>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let open = !page.parts.callers.is_enforced();
    if !page.parts.settings.admin.key_sign_in || open {
        return page.sign_in_page(
            StatusCode::FORBIDDEN,
            Some(format!(
                "Signing in with a key is off: sign in with Microsoft, or set {}=true.",
                variables::ADMIN_KEY_SIGN_IN
            )),
        );
    }
    let key = form.get("key").map(|k| k.trim()).unwrap_or_default();
    let authorization = format!("Bearer {key}");
    let credentials = Credentials {
        authorization: Some(&authorization),
        certificate_names: Vec::new(),
    };
    match page.parts.callers.authenticate(&credentials) {
        Ok(caller) if caller.is_admin() => {
            let entry = Entry::Key {
                caller: caller.name.clone(),
            };
            page.start_session(&format!("key {}", caller.name), entry)
                .await
        }
        Ok(caller) => page.refuse_sign_in(
            &caller.name,
            StatusCode::FORBIDDEN,
            format!(
                "The key of {} is a sender's: only callers with role \"admin\" may sign in.",
                caller.name
            ),
        ),
        Err(_) => page.refuse_sign_in(
            "-",
            StatusCode::UNAUTHORIZED,
            "That key is not one of this service's callers.".into(),
        ),
    }
}

/// `POST /admin/sign-in/open`: in when the service runs without callers.
pub(super) async fn open_service(State(page): State<Arc<AdminPage>>) -> Response {
    if page.parts.callers.is_enforced() {
        return page.sign_in_page(
            StatusCode::FORBIDDEN,
            Some("This service has callers: sign in as one of its administrators.".into()),
        );
    }
    page.start_session(crate::callers::ANONYMOUS, Entry::Open)
        .await
}

/// `POST /admin/sign-out`.
pub(super) async fn sign_out(
    State(page): State<Arc<AdminPage>>,
    headers: HeaderMap,
    Form(form): Form<super::actions::Fields>,
) -> Response {
    let session = match super::actions::authorized(&page, &headers, &form).await {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    if let Err(error) = page
        .parts
        .store
        .delete_admin_session(&session.id_hash)
        .await
    {
        tracing::error!(%error, "cannot end an admin session");
    }
    page.parts
        .audit
        .record(AuditRecord::new(AuditEvent::AdminSignOut, "ok").caller(&session.admin));
    let mut response = to_sign_in();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, page.secure_cookies()),
    );
    response
}
