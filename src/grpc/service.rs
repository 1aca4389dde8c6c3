//! The `graphmailer.v1.Mailer` service: parses each request, calls the core, answers.

use std::{future::Future, sync::Arc, time::Instant};

use tonic::{Request, Response, Status};

use super::convert;
use crate::{clock::to_timestamp, mailer::Mailer, proto};

/// The gRPC face of [`Mailer`].
#[derive(Debug, Clone)]
pub struct MailerService {
    mailer: Arc<Mailer>,
    max_message_bytes: u64,
}

impl MailerService {
    pub fn new(mailer: Arc<Mailer>, max_message_bytes: u64) -> Self {
        Self {
            mailer,
            max_message_bytes,
        }
    }
}

/// Runs one RPC and logs how it ended and how long it took. (No span per RPC: SendMail opens
/// its own span naming the message, and a span per call costs time on the hot path.)
async fn observe<T>(
    rpc: &'static str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let result = call.await;
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    // Successes are logged by the core where it has something to say (SendMail's line names
    // the message); failures here, with the status the caller got.
    match &result {
        Ok(_) => tracing::debug!(rpc, duration_ms, code = "OK", "rpc finished"),
        Err(status) => tracing::info!(
            rpc,
            duration_ms,
            code = ?status.code(),
            message = crate::telemetry::redact_addresses(status.message()),
            "rpc failed"
        ),
    }
    result.map(Response::new)
}

#[tonic::async_trait]
impl proto::mailer_server::Mailer for MailerService {
    async fn connect(
        &self,
        request: Request<proto::ConnectRequest>,
    ) -> Result<Response<proto::ConnectResponse>, Status> {
        observe("Connect", async {
            let request = request.into_inner();
            let mailbox = convert::mailbox(&request.mailbox)?;
            let link = self.mailer.connect(&mailbox, request.force_consent).await?;
            Ok(proto::ConnectResponse {
                authorization_url: link.url,
                expires_at: Some(to_timestamp(link.expires_at)),
            })
        })
        .await
    }

    async fn send_mail(
        &self,
        request: Request<proto::SendMailRequest>,
    ) -> Result<Response<proto::SendMailResponse>, Status> {
        observe("SendMail", async {
            let request = convert::send_request(request.into_inner(), self.max_message_bytes)?;
            let receipt = self.mailer.send(request).await?;
            Ok(convert::send_response(receipt))
        })
        .await
    }

    async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        observe("Status", async {
            let mailbox = convert::optional_mailbox(&request.into_inner().mailbox)?;
            let status = self.mailer.status(mailbox.as_ref()).await?;
            Ok(convert::status_response(status))
        })
        .await
    }

    async fn disconnect(
        &self,
        request: Request<proto::DisconnectRequest>,
    ) -> Result<Response<proto::DisconnectResponse>, Status> {
        observe("Disconnect", async {
            let mailbox = convert::mailbox(&request.into_inner().mailbox)?;
            self.mailer.disconnect(&mailbox).await?;
            Ok(proto::DisconnectResponse {})
        })
        .await
    }
}
