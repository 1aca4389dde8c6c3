//! Requests from the wire into domain types, and results back.
//!
//! Each field is parsed once, with its path as the caller wrote it (`to[2].address`), so an
//! INVALID_ARGUMENT names exactly what to fix.

use sha2::{Digest, Sha256};

use crate::{
    clock::to_timestamp,
    domain::{
        Attachment, CustomHeader, IdempotencyKey, Importance, ListCounts, Mailbox, MessageParts,
        OutgoingMessage, Recipient, ValidationError,
    },
    postoffice::{SendReceipt, SendRequest, ServiceStatus},
    proto,
    store::{ConnectionState, MailboxRecord},
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

/// A receipt on the wire.
pub fn send_response(receipt: SendReceipt) -> proto::SendMailResponse {
    proto::SendMailResponse {
        message_id: receipt.message_id,
        accepted_at: Some(to_timestamp(receipt.accepted_at)),
        deduplicated: receipt.deduplicated,
    }
}

/// Status on the wire.
pub fn status_response(status: ServiceStatus) -> proto::StatusResponse {
    proto::StatusResponse {
        mailboxes: status.mailboxes.into_iter().map(mailbox_status).collect(),
        transport: status.transport.to_owned(),
        client_secret_expires_at: status.client_secret_expires_at.map(to_timestamp),
        version: crate::VERSION.to_owned(),
        warnings: status.warnings,
    }
}

fn mailbox_status(record: MailboxRecord) -> proto::MailboxStatus {
    let state = match record.state {
        ConnectionState::NotConnected => proto::ConnectionState::NotConnected,
        ConnectionState::Pending => proto::ConnectionState::Pending,
        ConnectionState::Connected => proto::ConnectionState::Connected,
        ConnectionState::ReauthorizationRequired => proto::ConnectionState::ReauthorizationRequired,
    };
    proto::MailboxStatus {
        mailbox: record.mailbox.to_string(),
        state: state as i32,
        account: record.account.unwrap_or_default(),
        scopes: record.scopes,
        connected_at: record.connected_at.map(to_timestamp),
        access_token_expires_at: record.access_token_expires_at.map(to_timestamp),
        last_refreshed_at: record.last_refreshed_at.map(to_timestamp),
        last_sent_at: record.last_sent_at.map(to_timestamp),
        last_error: record.last_error.unwrap_or_default(),
        sent_total: record.sent_total,
        failed_total: record.failed_total,
        paused_until: record.paused_until.map(to_timestamp),
        sending_address: record.sending_address.unwrap_or_default(),
        missing_scopes: record.missing_scopes,
        pause_reason: record.pause_reason.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> proto::SendMailRequest {
        proto::SendMailRequest {
            mailbox: "noreply@contoso.com".into(),
            to: vec![proto::EmailAddress {
                address: "bob@example.com".into(),
                name: String::new(),
            }],
            subject: "Hi".into(),
            idempotency_key: "k1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_hash_ignores_the_key_and_notices_any_other_change() {
        let first = request_hash(&request());
        let other_key = proto::SendMailRequest {
            idempotency_key: "k2".into(),
            ..request()
        };
        assert_eq!(first, request_hash(&other_key));
        let other_subject = proto::SendMailRequest {
            subject: "Hi!".into(),
            ..request()
        };
        assert_ne!(first, request_hash(&other_subject));
    }

    #[test]
    fn errors_name_the_field_and_index() {
        let mut bad = request();
        bad.cc = vec![
            proto::EmailAddress {
                address: "ok@example.com".into(),
                name: String::new(),
            },
            proto::EmailAddress {
                address: "bob@".into(),
                name: String::new(),
            },
        ];
        let error = send_request(bad, 1 << 20).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cc[1].address: \"bob@\" is not a valid email address"
        );
    }

    #[test]
    fn an_unknown_importance_is_refused() {
        let mut bad = request();
        bad.importance = 9;
        assert_eq!(send_request(bad, 1 << 20).unwrap_err().field, "importance");
    }
}
