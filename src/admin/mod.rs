//! The admin page, `/admin` on the HTTP listener: the set-up journey in a browser.
//!
//! Server-rendered HTML (minijinja templates compiled into the binary), one stylesheet and one
//! small script that only adds comfort (a copy button, a mailbox turning CONNECTED without a
//! reload); every action is a plain form and works without it.
//!
//! - `session`: the session cookie, its server-side record and the CSRF token.
//! - `sign_in`: who may enter: administrators signing in with Microsoft (OpenID Connect with
//!   PKCE through the app registration, admitted when `GRAPH_MAILER_ADMINS` lists them), an
//!   admin caller's key, or anyone when the service runs without callers (as its gRPC API does).
//! - `views`: what the pages show, read from the post office, the outbox and `check`.
//! - `actions`: Connect, Disconnect, test mail, cancelling messages, running the checks; each
//!   goes through the same core as the RPCs and is written to the audit log with the admin's
//!   identity.

mod actions;
mod session;
mod sign_in;
mod views;

use std::sync::Arc;

use axum::{
    Router,
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use minijinja::Environment;
use serde::Serialize;

use crate::{
    audit::AuditLog,
    callers::{Caller, CallerRegistry},
    check::Report,
    clock::SharedClock,
    oauth::IdentityClient,
    outbox::Outbox,
    postoffice::{Error, PostOffice},
    settings::Settings,
    store::Store,
};
use session::Session;

/// What the admin page is made of.
pub struct Parts {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub clock: SharedClock,
    pub post_office: Arc<PostOffice>,
    pub outbox: Arc<Outbox>,
    pub callers: Arc<CallerRegistry>,
    /// The identity platform, when a tenant is configured.
    pub identity: Option<Arc<IdentityClient>>,
    pub audit: Arc<AuditLog>,
}

/// The admin page's state.
pub struct AdminPage {
    parts: Parts,
    templates: Environment<'static>,
    /// The last `check` report, and when it ran.
    checks: tokio::sync::Mutex<Option<(chrono::DateTime<chrono::Utc>, Report)>>,
}

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("connect.html", include_str!("templates/connect.html")),
    ("disconnect.html", include_str!("templates/disconnect.html")),
    ("outbox.html", include_str!("templates/outbox.html")),
    ("notice.html", include_str!("templates/notice.html")),
];
const STYLESHEET: &str = include_str!("assets/admin.css");
const SCRIPT: &str = include_str!("assets/admin.js");

impl AdminPage {
    pub fn new(parts: Parts) -> Arc<Self> {
        Arc::new(Self {
            parts,
            templates: templates(),
            checks: tokio::sync::Mutex::new(None),
        })
    }

    /// The routes under `/admin`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/admin", get(views::overview))
            .route("/admin/outbox", get(views::outbox))
            .route("/admin/mailbox-state", get(views::mailbox_state))
            .route("/admin/sign-in", get(sign_in::page))
            .route("/admin/sign-in/microsoft", get(sign_in::with_microsoft))
            .route("/admin/sign-in/key", post(sign_in::with_key))
            .route("/admin/sign-in/open", post(sign_in::open_service))
            .route("/admin/sign-out", post(sign_in::sign_out))
            .route("/admin/connect", post(actions::connect))
            .route(
                "/admin/disconnect",
                get(actions::confirm_disconnect).post(actions::disconnect),
            )
            .route("/admin/test-mail", post(actions::test_mail))
            .route("/admin/cancel", post(actions::cancel))
            .route("/admin/checks", post(actions::run_checks))
            .route("/admin/admin.css", get(stylesheet))
            .route("/admin/admin.js", get(script))
            .with_state(self.clone())
    }

    /// Renders a template with the session's identity and CSRF token.
    fn render(
        &self,
        status: StatusCode,
        template: &str,
        session: Option<&Session>,
        context: impl Serialize,
    ) -> Response {
        let base = minijinja::context! {
            admin => session.map(|s| s.admin.clone()),
            csrf => session.map(|s| s.csrf.clone()),
            transport => self.parts.post_office.transport_name(),
            version => crate::VERSION,
        };
        let rendered = self.templates.get_template(template).and_then(|t| {
            t.render(minijinja::context! { ..base, ..minijinja::Value::from_serialize(&context) })
        });
        match rendered {
            Ok(html) => (status, page_headers(), Html(html)).into_response(),
            Err(error) => {
                tracing::error!(%error, template, "admin page template failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    page_headers(),
                    "the admin page could not be rendered; see the service's log",
                )
                    .into_response()
            }
        }
    }

    /// A page saying what happened and where to go next.
    fn notice(
        &self,
        status: StatusCode,
        session: Option<&Session>,
        title: &str,
        message: &str,
    ) -> Response {
        let context = minijinja::context! { title, message, ok => status.is_success() };
        self.render(status, "notice.html", session, context)
    }

    /// A page for an error of the core, with the status it deserves.
    pub(super) fn failure(&self, session: &Session, action: &str, error: &Error) -> Response {
        let status = if error.is_service_fault() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::BAD_REQUEST
        };
        self.notice(
            status,
            Some(session),
            &format!("{action} did not succeed"),
            &error.to_string(),
        )
    }

    /// The caller an admin acts as: every right, named after the admin.
    fn caller(session: &Session) -> Caller {
        Caller::administrator(format!("admin page: {}", session.admin))
    }

    /// Whether the way `entry` got in still admits: the admins listed, the callers file in
    /// force, the service still open.
    fn still_admits(&self, entry: &session::Entry) -> bool {
        let callers = &self.parts.callers;
        match entry {
            session::Entry::Microsoft { object_id, account } => self
                .parts
                .settings
                .admin
                .admits(object_id.as_deref(), account.as_deref()),
            session::Entry::Key { caller } => {
                callers.is_enforced()
                    && self.parts.settings.admin.key_sign_in
                    && callers
                        .callers()
                        .by_name(caller)
                        .is_some_and(|caller| caller.is_admin())
            }
            session::Entry::Open => !callers.is_enforced(),
        }
    }

    /// Whether cookies must be Secure: the page is reached over https.
    fn secure_cookies(&self) -> bool {
        let settings = &self.parts.settings;
        settings.tls.is_some() || settings.public_url.as_str().starts_with("https://")
    }
}

/// The page templates, compiled into the binary (a broken one fails every test at once).
fn templates() -> Environment<'static> {
    let mut templates = Environment::new();
    for (name, source) in TEMPLATES {
        if let Err(error) = templates.add_template(name, source) {
            panic!("admin template {name} does not parse: {error}");
        }
    }
    templates
}

/// The headers of every admin page: scripts and styles only from this service, no framing, no
/// sniffing, no referrer, nothing cached (the pages show tokens' state and sign-in links).
fn page_headers() -> [(header::HeaderName, &'static str); 5] {
    [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ]
}

/// Where a request without a session goes.
fn to_sign_in() -> Response {
    Redirect::to("/admin/sign-in").into_response()
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// The session of a request, if it has a live one.
async fn session_of(page: &AdminPage, headers: &HeaderMap) -> Option<Session> {
    let id = session::cookie(headers, session::SESSION_COOKIE)?;
    let id_hash = session::hash("session", id);
    let now = page.parts.clock.now();
    match page.parts.store.admin_session(&id_hash, now).await {
        Ok(Some(record)) => {
            let entry: session::Entry = serde_json::from_str(&record.entry).ok()?;
            if !page.still_admits(&entry) {
                tracing::info!("an admin session whose admin is no longer admitted was refused");
                return None;
            }
            Some(Session {
                id_hash,
                admin: record.admin,
                entry,
                csrf: session::csrf_token(id),
                expires_at: record.expires_at,
            })
        }
        Ok(None) => None,
        Err(error) => {
            tracing::error!(%error, "cannot read an admin session");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::templates;

    /// Renders `template` strictly: a name the context lacks is an error, not an empty string.
    fn render(template: &str, context: serde_json::Value) -> String {
        let mut env = templates();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.get_template(template)
            .and_then(|t| t.render(context))
            .unwrap_or_else(|e| panic!("{template}: {e:#}"))
    }

    fn base() -> serde_json::Value {
        json!({"admin": "ops@contoso.com", "csrf": "t0k3n", "transport": "graph", "version": "1"})
    }

    fn with(mut context: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
        for (key, value) in extra.as_object().unwrap() {
            context[key] = value.clone();
        }
        context
    }

    #[test]
    fn the_overview_renders_every_part_and_escapes_what_microsoft_sent() {
        let mailbox = json!({
            "mailbox": "noreply@contoso.com", "state": "REAUTHORIZATION_REQUIRED", "healthy": false,
            "account": "noreply@contoso.com", "sending_address": "noreply@contoso.com",
            "granted": "Mail.Send", "missing": ["Mail.ReadWrite"], "token_expires": null,
            "last_refreshed": "2026-12-04 10:00 UTC (2 h ago)", "last_sent": null,
            "last_error": "<script>AADSTS70008</script>", "action": "Connect again",
            "sent": 3, "failed": 1, "queued": 2, "oldest_queued": "x", "sent_last_minute": 1,
            "recipients_last_24h": 4, "paused_until": "y", "pause_reason": "z"
        });
        let html = render(
            "overview.html",
            with(
                base(),
                json!({
                    "secret": {"expires": "2026-12-14", "days_left": 10, "expired": false, "rotate": true},
                    "warnings": ["the client secret expires soon"],
                    "checks_ran": "now",
                    "checks": [{"name": "redirect URI", "outcome": "FAIL", "detail": "d", "fix": "register it"}],
                    "mailboxes": [mailbox], "graph": true, "configured_scopes": "Mail.Send Mail.ReadWrite",
                    "per_minute": 30, "recipients_per_day": 10000, "session_ends": "in 8 h",
                }),
            ),
        );
        assert!(html.contains("10 days left") && html.contains("rotate-secret"));
        assert!(html.contains("Fix: register it"));
        assert!(html.contains("&lt;script&gt;AADSTS70008"), "escaped");
        assert!(!html.contains("<script>AADSTS"));
        let forms = html.matches("method=\"post\"").count();
        assert_eq!(forms, 5);
        assert_eq!(
            html.matches("name=\"csrf\" value=\"t0k3n\"").count(),
            forms,
            "every form"
        );
        assert!(html.contains("disconnect?mailbox=noreply%40contoso.com"));
    }

    #[test]
    fn the_other_pages_render() {
        let message = json!({"id": "m1", "mailbox": "a@b.c", "state": "QUEUED", "queued": true,
            "attempts": 0, "recipients": 1, "accepted": "now", "next_attempt": "soon", "sent": null,
            "last_error": null, "batch": "b1"});
        let outbox = render(
            "outbox.html",
            with(
                base(),
                json!({"messages": [message], "mailbox": "", "state": "QUEUED", "batch": "b1",
                       "states": ["QUEUED", "SENT"], "next_page": "page=x"}),
            ),
        );
        assert!(outbox.contains("1 recipient,") || outbox.contains("1 recipient<"));
        assert!(outbox.contains("value=\"QUEUED\" selected"));
        render(
            "connect.html",
            with(
                base(),
                json!({"mailbox": "a@b.c", "url": "https://login/x?y=1&z=2", "expires": "10:00",
                       "minutes": 10, "owner": true, "since": 1}),
            ),
        );
        render("disconnect.html", with(base(), json!({"mailbox": "a@b.c"})));
        render(
            "notice.html",
            with(base(), json!({"title": "t", "message": "m", "ok": true})),
        );
        let signed_out =
            json!({"admin": null, "csrf": null, "transport": "sandbox", "version": "1"});
        let sign_in = render(
            "sign_in.html",
            with(
                signed_out,
                json!({"problem": null, "microsoft": true, "nobody_listed": false, "key": true, "open": false,
                       "admins_variable": "A", "key_variable": "K"}),
            ),
        );
        assert!(sign_in.contains("Sign in with Microsoft") && !sign_in.contains("Sign out"));
    }
}
