//! Requests in their wire form (the generated proto messages) parsed into domain types.
//!
//! Each field is parsed once, with its path as the caller wrote it (`to[2].address`), so an
//! INVALID_ARGUMENT names exactly what to fix. The RPC layer parses what arrives; the outbox
//! stores requests as they arrived and parses them again when it sends them.

use sha2::{Digest, Sha256};

use crate::{
    domain::{
        Attachment, CustomHeader, IdempotencyKey, Importance, ListCounts, Mailbox, MessageParts,
        OutgoingMessage, Recipient, ValidationError,
    },
    postoffice::SendRequest,
    proto,
};

/// Parses a SendMailRequest.
pub fn send_request(
    request: proto::SendMailRequest,
    max_message_bytes: u64,
) -> Result<SendRequest, ValidationError> {
    // Count first, parse after: no list is parsed entry by entry when it is over its limit.
    ListCounts {
        recipients: request.to.len() + request.cc.len() + request.bcc.len(),
        reply_to: request.reply_to.len(),
        attachments: request.attachments.len(),
        headers: request.headers.len(),
    }
    .check()?;
    let mailbox = optional_mailbox(&request.mailbox)?;
    let idempotency_key = IdempotencyKey::parse(&request.idempotency_key)?;
    let request_hash = if idempotency_key.is_some() {
        request_hash(&request)
    } else {
        String::new()
    };
    let importance = match proto::Importance::try_from(request.importance) {
        Ok(proto::Importance::Unspecified) => None,
        Ok(proto::Importance::Low) => Some(Importance::Low),
        Ok(proto::Importance::Normal) => Some(Importance::Normal),
        Ok(proto::Importance::High) => Some(Importance::High),
        Err(_) => {
            return Err(ValidationError::new(
                "importance",
                format!("{} is not an Importance value", request.importance),
            ));
        }
    };
    let parts = MessageParts {
        to: recipients("to", &request.to)?,
        cc: recipients("cc", &request.cc)?,
        bcc: recipients("bcc", &request.bcc)?,
        reply_to: recipients("reply_to", &request.reply_to)?,
        subject: request.subject,
        text_body: request.text_body,
        html_body: request.html_body,
        attachments: request
            .attachments
            .into_iter()
            .enumerate()
            .map(|(i, a)| {
                Attachment::parse(
                    &format!("attachments[{i}]"),
                    &a.filename,
                    &a.content_type,
                    a.content,
                    &a.content_id,
                )
            })
            .collect::<Result<_, _>>()?,
        headers: request
            .headers
            .iter()
            .map(|(name, value)| CustomHeader::parse(name, value))
            .collect::<Result<_, _>>()?,
        importance,
        save_to_sent_items: !request.skip_sent_items,
    };
    Ok(SendRequest {
        mailbox,
        message: OutgoingMessage::new(parts, max_message_bytes)?,
        idempotency_key,
        request_hash,
    })
}

/// A required mailbox field.
pub fn mailbox(value: &str) -> Result<Mailbox, ValidationError> {
    Mailbox::parse("mailbox", value)
}

/// An optional mailbox field: empty means "not given".
pub fn optional_mailbox(value: &str) -> Result<Option<Mailbox>, ValidationError> {
    if value.trim().is_empty() {
        Ok(None)
    } else {
        mailbox(value).map(Some)
    }
}

fn recipients(
    field: &str,
    list: &[proto::EmailAddress],
) -> Result<Vec<Recipient>, ValidationError> {
    list.iter()
        .enumerate()
        .map(|(i, r)| Recipient::parse(&format!("{field}[{i}]"), &r.address, &r.name))
        .collect()
}

/// A hash of everything in the request but the idempotency key, streamed field by field so a
/// 100 MB attachment is not copied to be hashed.
pub fn request_hash(request: &proto::SendMailRequest) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(request.mailbox.trim().to_lowercase().as_bytes());
    for list in [&request.to, &request.cc, &request.bcc, &request.reply_to] {
        field(&(list.len() as u64).to_be_bytes());
        for address in list {
            field(address.address.as_bytes());
            field(address.name.as_bytes());
        }
    }
    field(request.subject.as_bytes());
    field(request.text_body.as_bytes());
    field(request.html_body.as_bytes());
    field(&(request.attachments.len() as u64).to_be_bytes());
    for attachment in &request.attachments {
        field(attachment.filename.as_bytes());
        field(attachment.content_type.as_bytes());
        field(&attachment.content);
        field(attachment.content_id.as_bytes());
    }
    // BTreeMap: a stable order.
    for (name, value) in &request.headers {
        field(name.as_bytes());
        field(value.as_bytes());
    }
    field(&request.importance.to_be_bytes());
    field(&[u8::from(request.skip_sent_items)]);
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
