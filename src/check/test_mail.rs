//! The last checkpoint: the set-up test mail ("graph-mailer test – <date>"), sent through the
//! real transport.

use std::sync::Arc;

use super::{Checks, Options};
use crate::{
    audit::AuditLog,
    callers::Caller,
    clock::SharedClock,
    domain::{Mailbox, MessageParts, OutgoingMessage, Recipient, ValidationError},
    oauth::SecretExpiry,
    postoffice::{Parts, PostOffice, SendRequest},
    settings::Settings,
    store::Store,
    transport::{SandboxTransport, SharedTransport},
    wiring::Microsoft,
};

pub(super) async fn send_test(
    settings: &Settings,
    store: &Store,
    microsoft: Option<Microsoft>,
    options: &Options,
    clock: SharedClock,
    checks: &mut Checks,
) {
    let Some(to) = &options.send_test else { return };
    let recipient = match Recipient::parse("--send-test", to, "") {
        Ok(recipient) => recipient,
        Err(error) => return checks.fail("test mail", error.to_string(), "give an email address"),
    };
    let from = match options
        .from
        .as_deref()
        .map(|f| Mailbox::parse("--from", f))
        .transpose()
    {
        Ok(from) => from,
        Err(error) => {
            return checks.fail(
                "test mail",
                error.to_string(),
                "give the mailbox to send as",
            );
        }
    };
    let (subject, message) = test_message(
        recipient,
        clock.now(),
        "`graph-mailer check --send-test`",
        settings.max_message_bytes,
    );
    let message = match message {
        Ok(message) => message,
        Err(error) => return checks.fail("test mail", error.to_string(), "check --send-test"),
    };
    let (transport, connect): (SharedTransport, _) = match microsoft {
        Some(m) => (m.transport, Some(m.connect)),
        None => (
            Arc::new(SandboxTransport::new(&settings.data_dir, clock.clone())),
            None,
        ),
    };
    let from = match from {
        Some(from) => Some(from),
        // The sandbox needs a sender; any address will do.
        None if !transport.needs_connected_mailboxes() => {
            Mailbox::parse("--from", "graph-mailer-check@localhost").ok()
        }
        None => None,
    };
    let post_office = PostOffice::new(Parts {
        store: store.clone(),
        clock,
        transport,
        connect,
        secret_expiry: SecretExpiry {
            expires_at: None,
            warning: chrono::Duration::days(30),
        },
        allowed_mailboxes: Vec::new(),
        audit: Arc::new(AuditLog::off()),
        scopes: None,
    });
    let request = SendRequest {
        mailbox: from,
        message,
        idempotency_key: None,
        request_hash: String::new(),
    };
    // `check` runs on the operator's behalf, with every right.
    let operator = Caller::anonymous();
    let message_id = uuid::Uuid::now_v7().to_string();
    let sent = match post_office
        .resolve_sender(&operator, request.mailbox.as_ref())
        .await
    {
        Ok(mailbox) => post_office.send(&mailbox, &request, &message_id).await,
        Err(error) => Err(error),
    };
    match sent {
        Ok(receipt) => checks.pass(
            "test mail",
            format!(
                "\"{subject}\" accepted for {to} (message_id {})",
                receipt.message_id
            ),
        ),
        Err(error) => checks.fail("test mail", error.to_string(), "see the message"),
    }
}

/// The set-up test mail to `to`, with its subject; `sent_by` says what sent it.
pub(crate) fn test_message(
    to: Recipient,
    now: chrono::DateTime<chrono::Utc>,
    sent_by: &str,
    max_message_bytes: u64,
) -> (String, Result<OutgoingMessage, ValidationError>) {
    let subject = format!("graph-mailer test – {}", now.format("%Y-%m-%d %H:%M UTC"));
    let message = OutgoingMessage::new(
        MessageParts {
            to: vec![to],
            subject: subject.clone(),
            text_body: format!(
                "This is a test message from graph-mailer {} sent by {sent_by}.\nIf you can read it, the set-up works.",
                crate::VERSION
            ),
            save_to_sent_items: true,
            ..Default::default()
        },
        max_message_bytes,
    );
    (subject, message)
}
