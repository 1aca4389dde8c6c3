//! The outbox's RPCs on the wire: QueueMail, SendBulk, GetMessage, ListMessages,
//! CancelMessage, GetBatch, CancelBatch and WatchMessages. The generated trait's methods (in
//! `service.rs`) delegate here.

use std::pin::Pin;

use futures::Stream;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::service::{MailerApi, caller_of};
use crate::{
    clock::to_timestamp,
    outbox::{BatchView, BulkReceipt, QueueReceipt},
    proto,
    store::{MessageRecord, MessageState},
};

/// The stream WatchMessages answers with.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<proto::MessageEvent, Status>> + Send>>;

impl MailerApi {
    pub(super) async fn queue_mail_rpc(
        &self,
        request: Request<proto::QueueMailRequest>,
    ) -> Result<Response<proto::QueueMailResponse>, Status> {
        let caller = caller_of(&request)?;
        self.observe("QueueMail", &caller, async {
            let receipt = self.outbox.queue(&caller, request.into_inner()).await?;
            Ok(queue_response(receipt))
        })
        .await
    }

    pub(super) async fn send_bulk_rpc(
        &self,
        request: Request<proto::SendBulkRequest>,
    ) -> Result<Response<proto::SendBulkResponse>, Status> {
        let caller = caller_of(&request)?;
        self.observe("SendBulk", &caller, async {
            let receipt = self.outbox.bulk(&caller, request.into_inner()).await?;
            Ok(bulk_response(receipt))
        })
        .await
    }

    pub(super) async fn get_message_rpc(
        &self,
        request: Request<proto::GetMessageRequest>,
    ) -> Result<Response<proto::MessageStatus>, Status> {
        let caller = caller_of(&request)?;
        self.observe("GetMessage", &caller, async {
            let id = request.into_inner().message_id;
            Ok(message_status(self.outbox.message(&caller, &id).await?))
        })
        .await
    }

    pub(super) async fn list_messages_rpc(
        &self,
        request: Request<proto::ListMessagesRequest>,
    ) -> Result<Response<proto::ListMessagesResponse>, Status> {
        let caller = caller_of(&request)?;
        self.observe("ListMessages", &caller, async {
            let page = self.outbox.list(&caller, request.into_inner()).await?;
            Ok(proto::ListMessagesResponse {
                messages: page.messages.into_iter().map(message_status).collect(),
                next_page_token: page.next_page_token.unwrap_or_default(),
            })
        })
        .await
    }

    pub(super) async fn cancel_message_rpc(
        &self,
        request: Request<proto::CancelMessageRequest>,
    ) -> Result<Response<proto::MessageStatus>, Status> {
        let caller = caller_of(&request)?;
        self.observe("CancelMessage", &caller, async {
            let id = request.into_inner().message_id;
            Ok(message_status(self.outbox.cancel(&caller, &id).await?))
        })
        .await
    }

    pub(super) async fn get_batch_rpc(
        &self,
        request: Request<proto::GetBatchRequest>,
    ) -> Result<Response<proto::BatchStatus>, Status> {
        let caller = caller_of(&request)?;
        self.observe("GetBatch", &caller, async {
            let id = request.into_inner().batch_id;
            Ok(batch_status(self.outbox.batch(&caller, &id).await?))
        })
        .await
    }

    pub(super) async fn cancel_batch_rpc(
        &self,
        request: Request<proto::CancelBatchRequest>,
    ) -> Result<Response<proto::BatchStatus>, Status> {
        let caller = caller_of(&request)?;
        self.observe("CancelBatch", &caller, async {
            let id = request.into_inner().batch_id;
            Ok(batch_status(self.outbox.cancel_batch(&caller, &id).await?))
        })
        .await
    }

    pub(super) async fn watch_messages_rpc(
        &self,
        request: Request<proto::WatchMessagesRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = caller_of(&request)?;
        self.observe("WatchMessages", &caller, async {
            let events = self.outbox.watch(caller.clone(), request.into_inner())?;
            let stream = ReceiverStream::new(events).map(|event| match event {
                Ok((sequence, record)) => Ok(proto::MessageEvent {
                    sequence,
                    message: Some(message_status(record)),
                }),
                Err(error) => Err(Status::from(error)),
            });
            Ok(Box::pin(stream) as EventStream)
        })
        .await
    }
}

fn queue_response(receipt: QueueReceipt) -> proto::QueueMailResponse {
    proto::QueueMailResponse {
        message_id: receipt.message_id,
        deduplicated: receipt.deduplicated,
        estimated_send_at: Some(to_timestamp(receipt.estimated_send_at)),
    }
}

fn bulk_response(receipt: BulkReceipt) -> proto::SendBulkResponse {
    proto::SendBulkResponse {
        batch_id: receipt.batch_id,
        deduplicated: receipt.deduplicated,
        messages: u32::try_from(receipt.messages).unwrap_or(u32::MAX),
        estimated_done_at: Some(to_timestamp(receipt.estimated_done_at)),
    }
}

/// A queued message on the wire.
pub fn message_status(record: MessageRecord) -> proto::MessageStatus {
    let state = match record.state {
        MessageState::Queued => proto::MessageState::Queued,
        MessageState::Sending => proto::MessageState::Sending,
        MessageState::Sent => proto::MessageState::Sent,
        MessageState::Failed => proto::MessageState::Failed,
        MessageState::Unknown => proto::MessageState::Unknown,
        MessageState::Cancelled => proto::MessageState::Cancelled,
    };
    proto::MessageStatus {
        message_id: record.message_id,
        mailbox: record.mailbox.to_string(),
        state: state as i32,
        attempts: record.attempts,
        accepted_at: Some(to_timestamp(record.accepted_at)),
        next_attempt_at: record.next_attempt_at.map(to_timestamp),
        sent_at: record.sent_at.map(to_timestamp),
        last_error: record.last_error.unwrap_or_default(),
        graph_request_id: record.graph_request_id.unwrap_or_default(),
        batch_id: record.batch_id.unwrap_or_default(),
        recipients: record.recipients,
    }
}

fn batch_status(view: BatchView) -> proto::BatchStatus {
    let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    let record = view.record;
    proto::BatchStatus {
        batch_id: record.batch_id,
        mailbox: record.mailbox.map(|m| m.to_string()).unwrap_or_default(),
        total: count(record.total),
        queued: count(record.queued),
        sent: count(record.sent),
        failed: count(record.failed),
        unknown: count(record.unknown),
        cancelled: count(record.cancelled),
        estimated_done_at: view.estimated_done_at.map(to_timestamp),
    }
}
