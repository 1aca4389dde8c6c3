//! The outbox's RPCs, with the caller's rights: senders see and change only their mailboxes'
//! messages.

use chrono::{DateTime, Utc};
use prost::Message;

use super::{Outbox, bulk::BulkTemplate};
use crate::{
    callers::Caller,
    domain::{Mailbox, OutgoingMessage, ValidationError},
    graph::payload::{INLINE_ATTACHMENT_LIMIT, UPLOAD_CHUNK},
    postoffice::Error,
    proto, requests,
    store::{BatchQueued, BatchRecord, MessageRecord, MessageState, NewBatch, NewQueued, Queued},
};

/// What QueueMail answers.
#[derive(Debug, Clone)]
pub struct QueueReceipt {
    pub message_id: String,
    pub deduplicated: bool,
    pub estimated_send_at: DateTime<Utc>,
}

/// What SendBulk answers.
#[derive(Debug, Clone)]
pub struct BulkReceipt {
    pub batch_id: String,
    pub deduplicated: bool,
    pub messages: u64,
    pub estimated_done_at: DateTime<Utc>,
}

/// A batch's counts and when its last queued message should go.
#[derive(Debug, Clone)]
pub struct BatchView {
    pub record: BatchRecord,
    pub estimated_done_at: Option<DateTime<Utc>>,
}

/// One page of ListMessages.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub messages: Vec<MessageRecord>,
    pub next_page_token: Option<String>,
}

impl Outbox {
    /// QueueMail: validates like SendMail, stores durably, answers.
    pub async fn queue(
        &self,
        caller: &Caller,
        request: proto::QueueMailRequest,
    ) -> Result<QueueReceipt, Error> {
        let message = request
            .message
            .ok_or_else(|| ValidationError::new("message", "is required"))?;
        let now = self.parts.clock.now();
        let send_at = self.send_at(request.send_at, now, "send_at")?;
        let parsed = requests::send_request(message.clone(), self.parts.max_message_bytes)
            .map_err(|e| prefixed("message", e))?;
        let mailbox = self
            .parts
            .post_office
            .queueable_sender(caller, parsed.mailbox.as_ref())
            .await?;
        let row = new_row(
            &mailbox,
            &parsed.message,
            now,
            send_at,
            parsed.idempotency_key.map(|k| k.as_str().to_owned()),
            parsed.request_hash,
            &caller.name,
            message.encode_to_vec(),
            None,
        );
        let message_id = row.message_id.clone();
        let hash = row.request_hash.clone();
        // The row moves to the committer: its body is not copied again.
        let (message_id, deduplicated, estimated) = match self.committer.commit(row).await? {
            Queued::New { estimate } => (message_id, false, estimate),
            Queued::Existing {
                message_id: earlier,
                request_hash,
            } if request_hash == hash => (earlier, true, now),
            Queued::Existing {
                message_id: earlier,
                ..
            } => {
                return Err(Error::KeyReused {
                    message_id: earlier,
                });
            }
        };
        if !deduplicated {
            self.activity.changed();
        }
        Ok(QueueReceipt {
            message_id,
            deduplicated,
            estimated_send_at: estimated,
        })
    }

    /// SendBulk: renders every recipient's message (refusing the batch on the first problem),
    /// then stores the batch in one transaction.
    pub async fn bulk(
        &self,
        caller: &Caller,
        request: proto::SendBulkRequest,
    ) -> Result<BulkReceipt, Error> {
        let count = request.recipients.len();
        if count == 0 || count > super::bulk::MAX_BULK_RECIPIENTS {
            return Err(ValidationError::new(
                "recipients",
                format!(
                    "{count} recipients; a batch has 1 to {}",
                    super::bulk::MAX_BULK_RECIPIENTS
                ),
            )
            .into());
        }
        let now = self.parts.clock.now();
        let send_at = self.send_at(request.send_at, now, "send_at")?;
        let template = request
            .template
            .clone()
            .ok_or_else(|| ValidationError::new("template", "is required"))?;
        let key = crate::domain::IdempotencyKey::parse(&request.idempotency_key)?
            .map(|k| k.as_str().to_owned());
        let compiled = BulkTemplate::compile(template.clone())?;
        let mut messages = Vec::with_capacity(count);
        for (index, recipient) in request.recipients.iter().enumerate() {
            let rendered = compiled.render(index, recipient)?;
            let parsed = requests::send_request(rendered, self.parts.max_message_bytes)
                .map_err(|e| prefixed(&format!("recipients[{index}]"), e))?;
            messages.push(parsed.message);
        }
        let template_mailbox =
            requests::optional_mailbox(&template.mailbox).map_err(|e| prefixed("template", e))?;
        let mailbox = self
            .parts
            .post_office
            .queueable_sender(caller, template_mailbox.as_ref())
            .await?;
        let batch_id = uuid::Uuid::now_v7().to_string();
        let request_hash = bulk_hash(&request);
        let rows: Vec<NewQueued> = messages
            .iter()
            .zip(&request.recipients)
            .map(|(message, recipient)| {
                new_row(
                    &mailbox,
                    message,
                    now,
                    send_at,
                    None,
                    request_hash.clone(),
                    &caller.name,
                    recipient.encode_to_vec(),
                    Some(batch_id.clone()),
                )
            })
            .collect();
        let batch = NewBatch {
            batch_id: batch_id.clone(),
            mailbox: mailbox.clone(),
            template: template.encode_to_vec(),
            idempotency_key: key,
            request_hash: request_hash.clone(),
            caller: caller.name.clone(),
            accepted_at: now,
        };
        let spacing = crate::store::spacing(&self.parts.settings.limits);
        let (batch_id, deduplicated, total, done) =
            match self.parts.store.queue_batch(&batch, &rows, spacing).await? {
                BatchQueued::New { estimate } => (batch_id, false, count as u64, estimate),
                BatchQueued::Existing {
                    batch_id: earlier,
                    request_hash: earlier_hash,
                    total,
                } if earlier_hash == request_hash => (earlier, true, total, now),
                BatchQueued::Existing {
                    batch_id: earlier, ..
                } => return Err(Error::BatchKeyReused { batch_id: earlier }),
            };
        self.activity.changed();
        Ok(BulkReceipt {
            batch_id,
            deduplicated,
            messages: total,
            estimated_done_at: done,
        })
    }

    /// A `send_at`: unset is now; more than the maximum age ahead would fail unsent.
    fn send_at(
        &self,
        send_at: Option<prost_types::Timestamp>,
        now: DateTime<Utc>,
        field: &str,
    ) -> Result<DateTime<Utc>, ValidationError> {
        let Some(at) = send_at else { return Ok(now) };
        let at = DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).unwrap_or(0))
            .ok_or_else(|| ValidationError::new(field, "is not a valid time"))?;
        let max_age = chrono::Duration::from_std(self.parts.settings.max_age).unwrap_or_default();
        if at > now + max_age {
            return Err(ValidationError::new(
                field,
                format!(
                    "is more than {} s ahead ({}): the message would expire unsent",
                    self.parts.settings.max_age.as_secs(),
                    crate::variables::OUTBOX_MAX_AGE_SECONDS
                ),
            ));
        }
        Ok(at.max(now))
    }
}

/// The row of one message to queue.
#[allow(clippy::too_many_arguments)]
fn new_row(
    mailbox: &Mailbox,
    message: &OutgoingMessage,
    now: DateTime<Utc>,
    send_at: DateTime<Utc>,
    idempotency_key: Option<String>,
    request_hash: String,
    caller: &str,
    body: Vec<u8>,
    batch_id: Option<String>,
) -> NewQueued {
    let domain = mailbox.domain();
    let recipients: Vec<&str> = message
        .to()
        .iter()
        .chain(message.cc())
        .chain(message.bcc())
        .map(|r| r.address.as_str())
        .collect();
    let external = recipients
        .iter()
        .filter(|address| {
            !address
                .rsplit_once('@')
                .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
        })
        .count();
    let attachment_bytes = message.attachment_bytes();
    let (upload_bytes, requests) = if attachment_bytes >= INLINE_ATTACHMENT_LIMIT {
        // A draft, an attachment call each (chunks for large ones), and the send.
        let chunks: u64 = message
            .attachments()
            .iter()
            .map(|a| (a.content.len() as u64).div_ceil(UPLOAD_CHUNK as u64) + 1)
            .sum();
        (attachment_bytes, 2 + chunks)
    } else {
        (0, 1)
    };
    NewQueued {
        message_id: uuid::Uuid::now_v7().to_string(),
        mailbox: mailbox.clone(),
        batch_id,
        recipients: u32::try_from(recipients.len()).unwrap_or(u32::MAX),
        external: u32::try_from(external).unwrap_or(u32::MAX),
        upload_bytes: attachment_bytes.min(upload_bytes),
        requests: u32::try_from(requests).unwrap_or(u32::MAX),
        size_bytes: message.size(),
        accepted_at: now,
        send_at,
        idempotency_key,
        request_hash,
        caller: caller.to_owned(),
        body,
    }
}

/// A validation error of a nested message, with the path from the request's root.
fn prefixed(prefix: &str, error: ValidationError) -> ValidationError {
    ValidationError::new(format!("{prefix}.{}", error.field), error.reason)
}

/// Refuses a caller that may not send as `mailbox`.
pub(super) fn visible(
    caller: &Caller,
    mailbox: &Mailbox,
    action: &str,
    what: &str,
) -> Result<(), Error> {
    if caller.may_send_as(mailbox) {
        Ok(())
    } else {
        Err(Error::NotAllowed {
            caller: caller.name.clone(),
            action: format!("{action} {what}"),
            reason: format!(
                "it belongs to {mailbox}, not one of {}",
                caller.mailbox_list()
            ),
        })
    }
}

/// A proto MessageState filter: unspecified is none.
pub(super) fn message_state(value: i32, field: &str) -> Result<Option<MessageState>, Error> {
    Ok(match proto::MessageState::try_from(value) {
        Ok(proto::MessageState::Unspecified) => None,
        Ok(proto::MessageState::Queued) => Some(MessageState::Queued),
        Ok(proto::MessageState::Sending) => Some(MessageState::Sending),
        Ok(proto::MessageState::Sent) => Some(MessageState::Sent),
        Ok(proto::MessageState::Failed) => Some(MessageState::Failed),
        Ok(proto::MessageState::Unknown) => Some(MessageState::Unknown),
        Ok(proto::MessageState::Cancelled) => Some(MessageState::Cancelled),
        Err(_) => {
            return Err(
                ValidationError::new(field, format!("{value} is not a MessageState")).into(),
            );
        }
    })
}

/// A hash of the whole SendBulk request but its key (deterministic: maps are ordered).
fn bulk_hash(request: &proto::SendBulkRequest) -> String {
    use sha2::{Digest, Sha256};
    let mut without_key = request.clone();
    without_key.idempotency_key.clear();
    Sha256::digest(without_key.encode_to_vec())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
