//! The gRPC server: the Mailer service behind authentication, standard health checks and
//! reflection, and the limits every call meets.
//!
//! - [`service`]: [`MailerApi`], the Mailer service's handlers.
//! - [`auth`]: who is calling, before a Mailer call runs.
//! - [`admission`]: the budget of request bytes in flight.
//! - [`codec`]: prost's codec with a count of each request's lists before decoding.
//! - [`convert`]: requests into domain types, results back.
//! - [`status`]: the one mapping of errors to gRPC statuses.

pub(crate) mod admission;
pub(crate) mod auth;
pub mod codec;
pub mod convert;
pub(crate) mod outbox;
pub(crate) mod service;
pub(crate) mod status;

use std::{future::Future, sync::Arc};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::{service::Routes, transport::server::Connected};
use tonic_health::server::HealthReporter;

pub use service::MailerApi;

use crate::{
    audit::AuditLog, callers::CallerRegistry, postoffice::PostOffice, proto,
    settings::LimitSettings,
};

/// Room for everything in a SendMailRequest besides the message's own bytes.
const ENVELOPE_ALLOWANCE: usize = 8 * 1024 * 1024;

/// What the gRPC side is made of.
pub struct GrpcServices {
    /// Health, Mailer (authenticated) and, when enabled, reflection.
    pub routes: Routes,
    /// Health alone, for the plaintext health listener.
    pub health_routes: Routes,
    /// Sets the health both report.
    pub reporter: HealthReporter,
}

/// What the Mailer service needs.
pub struct MailerParts {
    pub post_office: Arc<PostOffice>,
    pub outbox: Arc<crate::outbox::Outbox>,
    pub callers: Arc<CallerRegistry>,
    pub audit: Arc<AuditLog>,
    pub max_message_bytes: u64,
    pub reflection: bool,
}

/// The gRPC services.
pub fn services(parts: MailerParts) -> Result<GrpcServices, tonic_reflection::server::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let decoding_limit = usize::try_from(parts.max_message_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(ENVELOPE_ALLOWANCE);
    let api = MailerApi::new(
        parts.post_office,
        parts.outbox,
        parts.audit.clone(),
        parts.max_message_bytes,
    );
    let mailer = auth::Authenticated::new(
        proto::mailer_server::MailerServer::new(api).max_decoding_message_size(decoding_limit),
        parts.callers,
        parts.audit,
    );
    let mut routes = Routes::new(health.clone()).add_service(mailer);
    if parts.reflection {
        let reflection = |builder: tonic_reflection::server::Builder<'static>| {
            builder
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 =
            reflection(tonic_reflection::server::Builder::configure()).build_v1()?;
        // grpcurl 1.8 speaks only the older v1alpha protocol.
        let reflection_v1alpha =
            reflection(tonic_reflection::server::Builder::configure()).build_v1alpha()?;
        routes = routes
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
    }
    Ok(GrpcServices {
        routes,
        health_routes: Routes::new(health),
        reporter,
    })
}

/// Serves `routes` on `incoming` until `stop`, with the limits every call meets: a deadline,
/// a stream limit per connection, the in-flight byte budget, and a layer that turns a panic
/// into INTERNAL instead of a reset stream.
pub async fn serve<I, IO, IE>(
    routes: Routes,
    incoming: I,
    limits: LimitSettings,
    stop: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error>
where
    I: futures::Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tonic::transport::Server::builder()
        // A span per RPC, at debug level: the info-level line of each call comes from the
        // handlers, and a span per call would cost as much again on the hot path.
        .trace_fn(|request| tracing::debug_span!("rpc", path = %request.uri().path()))
        .timeout(limits.rpc_timeout)
        .max_concurrent_streams(limits.max_streams_per_connection)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_answer,
        ))
        .layer(admission::AdmissionLayer::new(limits.max_inflight_bytes))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, stop)
        .await
}

/// A handler panicked: the caller gets INTERNAL, the log says what happened.
fn panic_answer(
    panic: Box<dyn std::any::Any + Send + 'static>,
) -> http::Response<http_body_util::Full<Bytes>> {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic");
    tracing::error!(
        panic = crate::telemetry::redact_addresses(what),
        "a call panicked; answered INTERNAL"
    );
    status::internal_error().into_http()
}

/// Publishes health: `""` (the process, for liveness probes) and `graphmailer.v1.Mailer`
/// (whether it can do its job, for readiness probes).
pub async fn set_serving(reporter: &HealthReporter, alive: bool, ready: bool) {
    let status = |serving| {
        if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        }
    };
    reporter.set_service_status("", status(alive)).await;
    reporter
        .set_service_status(proto::SERVICE_NAME, status(ready))
        .await;
}
