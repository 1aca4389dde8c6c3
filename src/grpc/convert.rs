//! Results back to the wire. (Requests are parsed by [`crate::requests`], which the outbox
//! shares.)

pub use crate::requests::{mailbox, optional_mailbox, request_hash, send_request};
use crate::{
    clock::to_timestamp,
    postoffice::{SendReceipt, ServiceStatus},
    proto,
    store::{ConnectionState, MailboxRecord},
};

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
        queued: record.queue.queued,
        oldest_queued_at: record.queue.oldest_queued_at.map(to_timestamp),
        sent_last_minute: record.queue.sent_last_minute,
        recipients_last_24h: u32::try_from(record.queue.recipients_last_24h).unwrap_or(u32::MAX),
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
