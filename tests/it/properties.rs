//! Properties over arbitrary requests (proptest): parsing never panics and either accepts a
//! request or names the field it refuses; every accepted message survives the MIME builder, as
//! a MIME parser reads it back.

use bytes::Bytes;
use chrono::Utc;
use graph_mailer::{
    domain::{Mailbox, ValidationError},
    grpc::convert::send_request,
    mime::{self, AttachmentSelection, Envelope},
    proto,
};
use mail_parser::{MessageParser, MimeHeaders};
use proptest::{collection::vec, prelude::*};

use crate::support::attachment_bytes;

/// Text a caller might send, well-formed or not: ASCII, accents, CJK, emoji, line breaks,
/// controls, quotes and angle brackets.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 ]{0,20}",
        "[a-zA-Z0-9 éüß中文😀\"<>@.,;:\\\\]{0,30}",
        "[\\PC\r\n\t\u{0}]{0,12}",
    ]
}

/// Addresses, mostly valid.
fn address() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9]{1,10}(\\.[a-z0-9]{1,5})?@[a-z0-9]{1,10}\\.(com|org|example)",
        1 => "[a-z@. <>\"]{0,15}",
        1 => text(),
    ]
}

fn email() -> impl Strategy<Value = proto::EmailAddress> {
    (address(), prop_oneof![Just(String::new()), text()])
        .prop_map(|(address, name)| proto::EmailAddress { address, name })
}

fn attachment() -> impl Strategy<Value = proto::Attachment> {
    (
        prop_oneof!["[a-z]{1,8}\\.(pdf|png|txt)", text()],
        prop_oneof![
            Just(String::new()),
            Just("application/pdf".to_owned()),
            text()
        ],
        vec(any::<u8>(), 0..300),
        prop_oneof![3 => Just(String::new()), 1 => "[a-z0-9]{1,8}", 1 => text()],
    )
        .prop_map(
            |(filename, content_type, content, content_id)| proto::Attachment {
                filename,
                content_type,
                content: Bytes::from(content),
                content_id,
            },
        )
}

fn request() -> impl Strategy<Value = proto::SendMailRequest> {
    (
        prop_oneof![Just("noreply@contoso.com".to_owned()), address()],
        vec(email(), 0..4),
        vec(email(), 0..3),
        vec(email(), 0..3),
        vec(email(), 0..2),
        text(),
        (text(), text()),
        vec(attachment(), 0..3),
        vec((prop_oneof!["X-[A-Za-z]{1,8}", text()], text()), 0..4),
        (
            0i32..5,
            any::<bool>(),
            prop_oneof![Just(String::new()), text()],
        ),
    )
        .prop_map(
            |(
                mailbox,
                to,
                cc,
                bcc,
                reply_to,
                subject,
                (text_body, html_body),
                attachments,
                headers,
                (importance, skip_sent_items, idempotency_key),
            )| {
                proto::SendMailRequest {
                    mailbox,
                    to,
                    cc,
                    bcc,
                    reply_to,
                    subject,
                    text_body,
                    html_body,
                    attachments,
                    headers: headers.into_iter().collect(),
                    importance,
                    skip_sent_items,
                    idempotency_key,
                }
            },
        )
}

/// Text without line breaks or controls, as a well-formed request has.
fn clean_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 éüß中文😀\"<>@.,;:'()!?&-]{0,30}"
}

fn valid_email() -> impl Strategy<Value = proto::EmailAddress> {
    (
        "[a-z0-9]{1,10}(\\.[a-z0-9]{1,5})?@[a-z0-9]{1,10}\\.(com|org|example)",
        prop_oneof![Just(String::new()), "[a-zA-Z éü中]{1,15}"],
    )
        .prop_map(|(address, name)| proto::EmailAddress { address, name })
}

/// Requests that should be accepted: what the round trip is about.
fn valid_request() -> impl Strategy<Value = proto::SendMailRequest> {
    (
        vec(valid_email(), 1..4),
        vec(valid_email(), 0..3),
        vec(valid_email(), 0..3),
        clean_text(),
        (clean_text(), clean_text()),
        vec(
            (
                "[a-zA-Z0-9é中 _-]{1,10}\\.(pdf|png|txt|bin)",
                prop_oneof![
                    Just("application/pdf"),
                    Just("image/png"),
                    Just("text/plain"),
                    Just("")
                ],
                vec(any::<u8>(), 0..300),
                prop_oneof![3 => Just(String::new()), 1 => "[a-z0-9]{1,8}"],
            ),
            0..3,
        ),
        vec(("X-[A-Za-z]{1,8}", "[a-zA-Z0-9 éü=;]{0,20}"), 0..4),
    )
        .prop_map(
            |(to, cc, bcc, subject, (text_body, html_body), attachments, headers)| {
                proto::SendMailRequest {
                    mailbox: "noreply@contoso.com".into(),
                    to,
                    cc,
                    bcc,
                    subject,
                    text_body,
                    html_body,
                    attachments: attachments
                        .into_iter()
                        .map(
                            |(filename, content_type, content, content_id)| proto::Attachment {
                                filename,
                                content_type: content_type.to_owned(),
                                content: Bytes::from(content),
                                content_id,
                            },
                        )
                        .collect(),
                    headers: headers.into_iter().collect(),
                    ..Default::default()
                }
            },
        )
}

/// A field path as the service writes it: a name, indices, a quoted header name.
fn names_a_field(error: &ValidationError) -> bool {
    let roots = [
        "mailbox",
        "to",
        "cc",
        "bcc",
        "reply_to",
        "recipients",
        "subject",
        "attachments",
        "headers",
        "importance",
        "idempotency_key",
        "message",
    ];
    roots.iter().any(|root| error.field.starts_with(root))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn any_request_parses_or_names_the_field_it_refuses(request in request()) {
        match send_request(request, 1 << 20) {
            Ok(_) => {}
            Err(error) => prop_assert!(names_a_field(&error), "{error:?}"),
        }
    }

    #[test]
    fn every_accepted_message_survives_the_mime_builder(request in valid_request()) {
        let parsed = match send_request(request.clone(), 1 << 20) {
            Ok(parsed) => parsed,
            // Header names may repeat in other case: that refusal is the other property's.
            Err(error) if error.field.starts_with("headers") => return Ok(()),
            Err(error) => return Err(TestCaseError::fail(format!("refused: {error}"))),
        };
        let from = Mailbox::parse("mailbox", "noreply@contoso.com").unwrap();
        let raw = mime::build(
            &parsed.message,
            Envelope { from: &from, message_id: "id-1", date: Utc::now() },
            AttachmentSelection::All,
        );
        let read = MessageParser::default().parse(&raw).expect("a MIME parser reads it");
        for (list, header) in [
            (&request.to, read.to()),
            (&request.cc, read.cc()),
            (&request.bcc, read.bcc()),
        ] {
            let sent: Vec<&str> = list.iter().map(|a| a.address.as_str()).collect();
            let got: Vec<&str> = header
                .map(|h| h.iter().filter_map(|a| a.address()).collect())
                .unwrap_or_default();
            prop_assert_eq!(sent, got);
        }
        prop_assert_eq!(read.subject().unwrap_or_default().trim(), request.subject.trim());
        let mut sent: Vec<&[u8]> = request.attachments.iter().map(|a| &a.content[..]).collect();
        let mut got: Vec<Vec<u8>> = read.attachments().map(|a| attachment_bytes(&raw, a)).collect();
        let mut got: Vec<&[u8]> = got.iter_mut().map(|a| &a[..]).collect();
        sent.sort();
        got.sort();
        prop_assert_eq!(sent, got);
        let names: Vec<String> = read
            .attachments()
            .filter_map(|a| a.attachment_name().map(str::to_owned))
            .collect();
        prop_assert_eq!(names.len(), request.attachments.len());
    }
}
