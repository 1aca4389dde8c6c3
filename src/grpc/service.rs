//! The `graphmailer.v1.Mailer` service: parses each request, calls the core, answers, and
//! writes the one log line (and the metrics) of each SendMail.

use std::{future::Future, sync::Arc, time::Instant};

use tonic::{Request, Response, Status};

use super::{convert, status};
use crate::{
    audit::{AuditEvent, AuditLog, AuditRecord},
    callers::Caller,
    clock::to_timestamp,
    domain::Mailbox,
    metrics,
    outbox::Outbox,
    postoffice::{Error, PostOffice, SendReceipt, SendRequest},
    proto,
    transport::SendError,
};

/// The gRPC face of the [`PostOffice`]: implements the generated `Mailer` trait.
#[derive(Debug, Clone)]
pub struct MailerApi {
    post_office: Arc<PostOffice>,
    pub(super) outbox: Arc<Outbox>,
    audit: Arc<AuditLog>,
    max_message_bytes: u64,
}

impl MailerApi {
    pub fn new(
        post_office: Arc<PostOffice>,
        outbox: Arc<Outbox>,
        audit: Arc<AuditLog>,
        max_message_bytes: u64,
    ) -> Self {
        Self {
            post_office,
            outbox,
            audit,
            max_message_bytes,
        }
    }

    /// Runs one RPC for `caller` and logs how it ended and how long it took. (No span per RPC:
    /// SendMail opens its own span naming the message, and a span per call costs time on the
    /// hot path.) A refusal for lack of rights goes to the audit log.
    pub(super) async fn observe<T>(
        &self,
        rpc: &'static str,
        caller: &Caller,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = call.await;
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let caller_name = caller.name.as_str();
        // Successes are logged where there is something to say (SendMail's line names the
        // message); failures here, with the status the caller got.
        match result {
            Ok(response) => {
                tracing::debug!(
                    rpc,
                    caller = caller_name,
                    duration_ms,
                    code = "OK",
                    "rpc finished"
                );
                Ok(Response::new(response))
            }
            Err(error) => {
                if let Error::NotAllowed { .. } = &error {
                    self.audit.record(
                        AuditRecord::new(AuditEvent::Refused, "permission_denied")
                            .caller(caller_name)
                            .rpc(rpc)
                            .detail(error.to_string()),
                    );
                }
                let fault = error.is_service_fault();
                let status = Status::from(error);
                let message = crate::telemetry::redact_addresses(status.message());
                let code = status.code();
                if fault {
                    tracing::error!(
                        rpc,
                        caller = caller_name,
                        duration_ms,
                        ?code,
                        message,
                        "rpc failed"
                    );
                } else {
                    tracing::info!(
                        rpc,
                        caller = caller_name,
                        duration_ms,
                        ?code,
                        message,
                        "rpc failed"
                    );
                }
                Err(status)
            }
        }
    }
}

/// The caller the authentication layer identified.
pub(super) fn caller_of<T>(request: &Request<T>) -> Result<Arc<Caller>, Status> {
    request
        .extensions()
        .get::<Arc<Caller>>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("the call was not authenticated"))
}

#[tonic::async_trait]
impl proto::mailer_server::Mailer for MailerApi {
    async fn connect(
        &self,
        request: Request<proto::ConnectRequest>,
    ) -> Result<Response<proto::ConnectResponse>, Status> {
        let caller = caller_of(&request)?;
        self.observe("Connect", &caller, async {
            let request = request.into_inner();
            let mailbox = convert::mailbox(&request.mailbox)?;
            let link = self
                .post_office
                .connect(&caller, &mailbox, request.force_consent)
                .await?;
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
        let caller = caller_of(&request)?;
        self.observe("SendMail", &caller, async {
            let request = convert::send_request(request.into_inner(), self.max_message_bytes)?;
            let started = Instant::now();
            let _in_flight = metrics::InFlight::start();
            let mailbox = self
                .post_office
                .resolve_sender(&caller, request.mailbox.as_ref())
                .await?;
            let message_id = uuid::Uuid::now_v7().to_string();
            let result = self.post_office.send(&mailbox, &request, &message_id).await;
            let outcome = SendOutcome {
                caller: &caller,
                mailbox: &mailbox,
                request: &request,
                message_id: &message_id,
                result: &result,
                started,
            };
            outcome.record(self.post_office.transport_name());
            Ok(convert::send_response(result?))
        })
        .await
    }

    async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let caller = caller_of(&request)?;
        self.observe("Status", &caller, async {
            let mailbox = convert::optional_mailbox(&request.into_inner().mailbox)?;
            let status = self.post_office.status(&caller, mailbox.as_ref()).await?;
            Ok(convert::status_response(status))
        })
        .await
    }

    async fn disconnect(
        &self,
        request: Request<proto::DisconnectRequest>,
    ) -> Result<Response<proto::DisconnectResponse>, Status> {
        let caller = caller_of(&request)?;
        self.observe("Disconnect", &caller, async {
            let mailbox = convert::mailbox(&request.into_inner().mailbox)?;
            self.post_office.disconnect(&caller, &mailbox).await?;
            Ok(proto::DisconnectResponse {})
        })
        .await
    }

    async fn queue_mail(
        &self,
        request: Request<proto::QueueMailRequest>,
    ) -> Result<Response<proto::QueueMailResponse>, Status> {
        self.queue_mail_rpc(request).await
    }

    async fn send_bulk(
        &self,
        request: Request<proto::SendBulkRequest>,
    ) -> Result<Response<proto::SendBulkResponse>, Status> {
        self.send_bulk_rpc(request).await
    }

    async fn get_message(
        &self,
        request: Request<proto::GetMessageRequest>,
    ) -> Result<Response<proto::MessageStatus>, Status> {
        self.get_message_rpc(request).await
    }

    async fn list_messages(
        &self,
        request: Request<proto::ListMessagesRequest>,
    ) -> Result<Response<proto::ListMessagesResponse>, Status> {
        self.list_messages_rpc(request).await
    }

    async fn cancel_message(
        &self,
        request: Request<proto::CancelMessageRequest>,
    ) -> Result<Response<proto::MessageStatus>, Status> {
        self.cancel_message_rpc(request).await
    }

    async fn get_batch(
        &self,
        request: Request<proto::GetBatchRequest>,
    ) -> Result<Response<proto::BatchStatus>, Status> {
        self.get_batch_rpc(request).await
    }

    async fn cancel_batch(
        &self,
        request: Request<proto::CancelBatchRequest>,
    ) -> Result<Response<proto::BatchStatus>, Status> {
        self.cancel_batch_rpc(request).await
    }

    type WatchMessagesStream = super::outbox::EventStream;

    async fn watch_messages(
        &self,
        request: Request<proto::WatchMessagesRequest>,
    ) -> Result<Response<Self::WatchMessagesStream>, Status> {
        self.watch_messages_rpc(request).await
    }
}

/// How one SendMail ended, for its log line and metrics.
struct SendOutcome<'a> {
    caller: &'a Caller,
    mailbox: &'a Mailbox,
    request: &'a SendRequest,
    message_id: &'a str,
    result: &'a Result<SendReceipt, Error>,
    started: Instant,
}

impl SendOutcome<'_> {
    /// One line per SendMail: what was sent (by domain), its id, and how it ended; and the
    /// send counters and duration histogram.
    fn record(&self, transport: &'static str) {
        let duration = self.started.elapsed();
        let (outcome, code) = match self.result {
            Ok(receipt) if receipt.deduplicated => ("deduplicated", "OK"),
            Ok(_) => ("sent", "OK"),
            Err(error) => ("failed", status::code_name(status::code(error))),
        };
        // A mailbox the service has no connection for gets no label of its own: a flood of
        // sends for made-up addresses must not make a metric series per domain.
        let unknown = matches!(
            self.result,
            Err(Error::Delivery(SendError::Token(
                crate::oauth::TokenError::NotConnected { .. }
            )))
        );
        let mailbox_domain = if unknown {
            "other"
        } else {
            self.mailbox.domain()
        };
        metrics::send_finished(
            mailbox_domain,
            &self.caller.name,
            outcome,
            code,
            duration.as_secs_f64(),
            transport,
        );
        let duration_ms = duration.as_secs_f64() * 1000.0;
        let message = &self.request.message;
        let recipient_domains = message.recipient_domains().join(",");
        match self.result {
            Ok(receipt) => tracing::info!(
                rpc = "SendMail",
                caller = self.caller.name,
                message_id = receipt.message_id,
                mailbox_domain = self.mailbox.domain(),
                recipient_domains,
                attachments = message.attachments().len(),
                outcome,
                duration_ms,
                "message accepted"
            ),
            Err(error) => tracing::warn!(
                rpc = "SendMail",
                caller = self.caller.name,
                message_id = self.message_id,
                mailbox_domain = self.mailbox.domain(),
                recipient_domains,
                code,
                error = crate::telemetry::redact_addresses(&error.to_string()),
                duration_ms,
                "message not sent"
            ),
        }
    }
}
