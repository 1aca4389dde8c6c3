//! The HTTP side: the OAuth callback the browser lands on, liveness, readiness and metrics.

pub mod pages;

use std::sync::Arc;

use axum::{
    Router,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::{
    health::Health,
    oauth::{CallbackOutcome, CallbackParams, ConnectFlow},
    settings::names,
};

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub connect: Option<Arc<ConnectFlow>>,
    pub health: Arc<Health>,
    pub metrics: PrometheusHandle,
}

/// The HTTP routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/oauth2/callback", get(callback))
        .with_state(state)
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the store answers and the service is not shutting down.
async fn readyz(State(state): State<HttpState>) -> Response {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Where Microsoft sends the browser after sign-in.
async fn callback(
    State(state): State<HttpState>,
    Query(params): Query<CallbackParams>,
) -> Response {
    let outcome = match &state.connect {
        Some(connect) => connect.complete(params).await,
        None => CallbackOutcome::Failed {
            status: 404,
            title: "This graph-mailer runs the sandbox transport.".into(),
            what_to_do: format!(
                "Configure the app registration ({}, {}, {}) to connect mailboxes.",
                names::TENANT_ID,
                names::CLIENT_ID,
                names::CLIENT_SECRET
            ),
            details: None,
        },
    };
    let (status, html) = pages::callback_page(&outcome);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(html),
    )
        .into_response()
}
