//! The HTTP side: the OAuth callback the browser lands on, the admin page (`crate::admin`),
//! liveness, readiness and metrics.
//!
//! Pages carry security headers ([`security_headers`]): no scripts, no framing, no sniffing,
//! no referrer, no caching.

pub mod pages;

use std::sync::Arc;

use axum::{
    Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::{
    admin::AdminPage,
    health::Health,
    oauth::{CallbackOutcome, CallbackParams, ConnectFlow},
    variables,
};

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub connect: Option<Arc<ConnectFlow>>,
    pub health: Arc<Health>,
    /// `None` when `/metrics` has a listener of its own.
    pub metrics: Option<PrometheusHandle>,
    /// The admin page, when served.
    pub admin: Option<Arc<AdminPage>>,
}

/// The HTTP listener's routes.
pub fn router(state: HttpState) -> Router {
    let mut router = Router::new()
        .route("/oauth2/callback", get(callback))
        .with_state(state.clone())
        .merge(probes(state.health));
    if let Some(admin) = &state.admin {
        router = router.merge(admin.router());
    }
    if let Some(metrics) = state.metrics {
        router = router.merge(metrics_only(metrics));
    }
    router
}

/// `/healthz` and `/readyz`, also served on the plaintext health listener.
pub fn probes(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health)
}

/// `/metrics` alone.
pub fn metrics_only(metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .with_state(metrics)
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the store answers and the service is not shutting down.
async fn readyz(State(health): State<Arc<Health>>) -> Response {
    if health.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn render_metrics(State(metrics): State<PrometheusHandle>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
        .into_response()
}

/// The headers of every page: nothing but inline styles may run, the page cannot be framed,
/// types are not sniffed, no referrer leaves, nothing is cached.
pub fn security_headers() -> [(header::HeaderName, &'static str); 5] {
    [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; \
             base-uri 'none'; form-action 'self'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ]
}

/// Where Microsoft sends the browser after sign-in.
async fn callback(
    State(state): State<HttpState>,
    Query(params): Query<CallbackParams>,
    headers: HeaderMap,
) -> Response {
    // One redirect URI serves both sign-ins; the `state` tells an administrator's from a
    // mailbox owner's.
    if let Some(admin) = &state.admin
        && let Some(response) = admin.finish_sign_in(&params, &headers).await
    {
        return response;
    }
    let outcome = match &state.connect {
        Some(connect) => connect.complete(params).await,
        None => CallbackOutcome::Failed {
            status: 404,
            title: "This graph-mailer runs the sandbox transport.".into(),
            what_to_do: format!(
                "Configure the app registration ({}, {}, {}) to connect mailboxes.",
                variables::TENANT_ID,
                variables::CLIENT_ID,
                variables::CLIENT_SECRET
            ),
            details: None,
        },
    };
    let (status, html) = pages::callback_page(&outcome);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, security_headers(), Html(html)).into_response()
}
