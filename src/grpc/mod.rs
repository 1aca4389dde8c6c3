//! The gRPC server: the Mailer service, standard health checks and reflection.

pub mod convert;
pub(crate) mod service;
pub(crate) mod status;

use std::sync::Arc;

use tonic::service::Routes;
use tonic_health::server::HealthReporter;

pub use service::MailerApi;

use crate::{postoffice::PostOffice, proto};

/// Room for everything in a SendMailRequest besides the message's own bytes.
const ENVELOPE_ALLOWANCE: usize = 8 * 1024 * 1024;

/// The routes of the gRPC server, and the reporter that sets their health.
pub fn routes(
    post_office: Arc<PostOffice>,
    max_message_bytes: u64,
) -> Result<(Routes, HealthReporter), tonic_reflection::server::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let decoding_limit = usize::try_from(max_message_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(ENVELOPE_ALLOWANCE);
    let mailer =
        proto::mailer_server::MailerServer::new(MailerApi::new(post_office, max_message_bytes))
            .max_decoding_message_size(decoding_limit);
    let reflection = |builder: tonic_reflection::server::Builder<'static>| {
        builder
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection(tonic_reflection::server::Builder::configure()).build_v1()?;
    // grpcurl 1.8 speaks only the older v1alpha protocol.
    let reflection_v1alpha =
        reflection(tonic_reflection::server::Builder::configure()).build_v1alpha()?;
    let routes = Routes::new(health)
        .add_service(mailer)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok((routes, reporter))
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
