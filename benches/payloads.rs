//! The hot path of building what goes to Graph: the JSON body of a typical message, the MIME
//! form, the plan for a large attachment, and the idempotency hash.
//!
//! `cargo bench --bench payloads`

use std::hint::black_box;

use bytes::Bytes;
use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use graph_mailer::{
    domain::{Attachment, CustomHeader, Mailbox, MessageParts, OutgoingMessage, Recipient},
    graph::payload,
    grpc::convert::request_hash,
    proto,
};

/// A typical 2 KB notification: two recipients, a subject, a text body of about 2 KB.
fn two_kilobyte_message() -> OutgoingMessage {
    OutgoingMessage::new(
        MessageParts {
            to: vec![
                Recipient::parse("to[0]", "bob@example.com", "Bob Smith").unwrap(),
                Recipient::parse("to[1]", "carol@example.org", "").unwrap(),
            ],
            subject: "Your order 1001 has shipped".into(),
            text_body: "Hello Bob,\n\nyour order has shipped. ".repeat(56),
            headers: vec![CustomHeader::parse("X-Order", "1001").unwrap()],
            save_to_sent_items: true,
            ..Default::default()
        },
        150 << 20,
    )
    .unwrap()
}

fn alternative_message() -> OutgoingMessage {
    OutgoingMessage::new(
        MessageParts {
            to: vec![Recipient::parse("to[0]", "bob@example.com", "Bob").unwrap()],
            subject: "Newsletter".into(),
            text_body: "Plain text version. ".repeat(50),
            html_body: "<p>HTML version.</p>".repeat(50),
            attachments: vec![
                Attachment::parse(
                    "attachments[0]",
                    "logo.png",
                    "image/png",
                    Bytes::from(vec![7u8; 20 * 1024]),
                    "logo",
                )
                .unwrap(),
            ],
            save_to_sent_items: true,
            ..Default::default()
        },
        150 << 20,
    )
    .unwrap()
}

fn payloads(c: &mut Criterion) {
    let from = Mailbox::parse("mailbox", "noreply@contoso.com").unwrap();
    let small = two_kilobyte_message();
    let mut group = c.benchmark_group("payload");
    group.throughput(Throughput::Elements(1));
    group.bench_function("json_2kb", |b| {
        b.iter(|| {
            payload::json_send_mail(
                black_box(&small),
                small.attachments(),
                "<0190-id@contoso.com>",
            )
        })
    });
    let alternative = alternative_message();
    group.bench_function("mime_alternative_20kb_inline", |b| {
        // Text and HTML together: planned as the MIME form, built and base64-encoded once.
        b.iter(|| payload::plan(black_box(&alternative), &from, "0190-id", Utc::now()))
    });
    let large = OutgoingMessage::new(
        MessageParts {
            attachments: vec![
                Attachment::parse(
                    "attachments[0]",
                    "video.bin",
                    "",
                    Bytes::from(vec![1u8; 50 << 20]),
                    "",
                )
                .unwrap(),
            ],
            ..MessageParts {
                to: vec![Recipient::parse("to[0]", "bob@example.com", "").unwrap()],
                save_to_sent_items: true,
                ..Default::default()
            }
        },
        150 << 20,
    )
    .unwrap();
    group.bench_function("plan_50mb_attachment", |b| {
        b.iter(|| payload::plan(black_box(&large), &from, "0190-id", Utc::now()))
    });
    let request = proto::SendMailRequest {
        mailbox: "noreply@contoso.com".into(),
        to: vec![proto::EmailAddress {
            address: "bob@example.com".into(),
            name: String::new(),
        }],
        subject: "Hi".into(),
        text_body: "x".repeat(2048),
        idempotency_key: "k".into(),
        ..Default::default()
    };
    group.bench_function("request_hash_2kb", |b| {
        b.iter(|| request_hash(black_box(&request)))
    });
    group.finish();
}

criterion_group!(benches, payloads);
criterion_main!(benches);
