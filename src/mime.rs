//! The one RFC 5322 message builder.
//!
//! The sandbox writes its output as `.eml` files and the Graph transport sends it (base64) when
//! JSON cannot express a message, so what a developer sees in the sandbox is what Microsoft
//! receives.
//!
//! Structure: the body is `text/plain`, `text/html` or `multipart/alternative` of both; inline
//! parts wrap it in `multipart/related`; attachments wrap that in `multipart/mixed`.

use std::borrow::Cow;

use base64::Engine;

use chrono::{DateTime, Utc};
use mail_builder::{
    MessageBuilder,
    headers::{
        address::Address, content_type::ContentType, date::Date, message_id::MessageId, raw::Raw,
        text::Text,
    },
    mime::{BodyPart, MimePart},
};

use crate::domain::{Attachment, Importance, Mailbox, OutgoingMessage, Recipient};

/// What the message's envelope headers say beyond the caller's content.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The sending mailbox (`From`).
    pub from: &'a Mailbox,
    /// The service's message id; the `Message-ID` header is `<id@sender's domain>`.
    pub message_id: &'a str,
    /// The `Date` header.
    pub date: DateTime<Utc>,
}

/// Which attachments go into the MIME message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentSelection {
    /// All of them.
    All,
    /// None: they travel separately (Graph upload sessions).
    None,
}

/// The `Message-ID` (without angle brackets) of the service's message `message_id` sent from
/// `from`: `id@sender's domain`.
pub fn message_id_for(message_id: &str, from: &Mailbox) -> String {
    format!("{message_id}@{}", from.domain())
}

/// Builds the RFC 5322 message.
pub fn build(
    message: &OutgoingMessage,
    envelope: Envelope<'_>,
    attachments: AttachmentSelection,
) -> Vec<u8> {
    builder(message, envelope, attachments)
        .write_to_vec()
        .unwrap_or_default()
}

/// Writes the RFC 5322 message to `writer` as it is built: a 150 MB attachment's 200 MB of
/// base64 never has to sit in memory (the sandbox streams it to its file).
pub fn write(
    message: &OutgoingMessage,
    envelope: Envelope<'_>,
    attachments: AttachmentSelection,
    writer: impl std::io::Write,
) -> std::io::Result<()> {
    builder(message, envelope, attachments).write_to(writer)
}

fn builder<'x>(
    message: &'x OutgoingMessage,
    envelope: Envelope<'x>,
    attachments: AttachmentSelection,
) -> MessageBuilder<'x> {
    let mut builder = MessageBuilder::new()
        .from(Address::new_address(None::<&str>, envelope.from.as_str()))
        .message_id(MessageId::new(message_id_for(
            envelope.message_id,
            envelope.from,
        )))
        .date(Date::new(envelope.date.timestamp()))
        .subject(Text::new(message.subject()));
    for (header, recipients) in [
        ("To", message.to()),
        ("Cc", message.cc()),
        ("Bcc", message.bcc()),
        ("Reply-To", message.reply_to()),
    ] {
        if !recipients.is_empty() {
            builder = builder.header(header, address_list(recipients));
        }
    }
    if let Some(importance) = message.importance() {
        let value = match importance {
            Importance::Low => "low",
            Importance::Normal => "normal",
            Importance::High => "high",
        };
        builder = builder.header("Importance", Raw::new(value));
    }
    for header in message.headers() {
        builder = builder.header(header.name.as_str(), Text::new(header.value.as_str()));
    }
    let selected: &[Attachment] = match attachments {
        AttachmentSelection::All => message.attachments(),
        AttachmentSelection::None => &[],
    };
    builder.body(body_structure(message, selected))
}

fn address_list(recipients: &[Recipient]) -> Address<'_> {
    Address::new_list(
        recipients
            .iter()
            .map(|r| Address::new_address(r.name.as_deref(), r.address.as_str()))
            .collect(),
    )
}

fn body_structure<'a>(message: &'a OutgoingMessage, attachments: &'a [Attachment]) -> MimePart<'a> {
    let text = message.text_body().map(|t| MimePart::new("text/plain", t));
    let html = message.html_body().map(|h| MimePart::new("text/html", h));
    let mut body = match (text, html) {
        (Some(text), Some(html)) => MimePart::new("multipart/alternative", vec![text, html]),
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => MimePart::new("text/plain", ""),
    };
    let (inline, regular): (Vec<&Attachment>, Vec<&Attachment>) =
        attachments.iter().partition(|a| a.is_inline());
    if !inline.is_empty() {
        let mut parts = vec![body];
        parts.extend(inline.into_iter().map(attachment_part));
        body = MimePart::new("multipart/related", parts);
    }
    if !regular.is_empty() {
        let mut parts = vec![body];
        parts.extend(regular.into_iter().map(attachment_part));
        body = MimePart::new("multipart/mixed", parts);
    }
    body
}

fn attachment_part(attachment: &Attachment) -> MimePart<'_> {
    let part = MimePart::new(
        attachment.content_type.as_str(),
        attachment_body(attachment),
    );
    let part = if is_text(&attachment.content_type) {
        part.transfer_encoding("base64")
    } else {
        part
    };
    match &attachment.content_id {
        Some(cid) => part
            .header(
                "Content-Disposition",
                ContentType::new("inline").attribute("filename", attachment.filename.as_str()),
            )
            .cid(cid.as_str()),
        None => part.attachment(attachment.filename.as_str()),
    }
}

/// An attachment's body. Binary types are base64-encoded by the builder. Text types would be
/// written as quoted-printable or as lines, where a reader may turn bare line feeds into CRLF
/// or decode the bytes in a charset nobody declared: an attachment must arrive byte for byte,
/// so text is base64-encoded here (76-character lines) and written as it is.
fn attachment_body(attachment: &Attachment) -> BodyPart<'_> {
    if !is_text(&attachment.content_type) {
        return BodyPart::Binary(Cow::Borrowed(&attachment.content[..]));
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(&attachment.content);
    let mut wrapped = String::with_capacity(encoded.len() + encoded.len() / 38 + 2);
    for line in encoded.as_bytes().chunks(76) {
        wrapped.push_str(std::str::from_utf8(line).unwrap_or_default());
        wrapped.push_str("\r\n");
    }
    // Binary, so the builder adds no charset the bytes may not be in.
    BodyPart::Binary(Cow::Owned(wrapped.into_bytes()))
}

fn is_text(content_type: &str) -> bool {
    content_type
        .get(..5)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("text/"))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use mail_parser::{MessageParser, MimeHeaders};

    use super::*;
    use crate::domain::{CustomHeader, MessageParts};

    fn message() -> OutgoingMessage {
        let recipient = |field: &str, address: &str, name: &str| {
            Recipient::parse(field, address, name).unwrap()
        };
        OutgoingMessage::new(
            MessageParts {
                to: vec![recipient("to[0]", "bob@example.com", "Bob Smith")],
                cc: vec![recipient("cc[0]", "carol@example.org", "")],
                bcc: vec![recipient("bcc[0]", "dave@example.net", "")],
                reply_to: vec![recipient("reply_to[0]", "help@contoso.com", "Help desk")],
                subject: "Quarterly report – Q3".into(),
                text_body: "Plain text".into(),
                html_body: "<p>HTML <img src=\"cid:logo\"></p>".into(),
                attachments: vec![
                    Attachment::parse(
                        "attachments[0]",
                        "report.pdf",
                        "application/pdf",
                        Bytes::from_static(b"%PDF-1.7 fake"),
                        "",
                    )
                    .unwrap(),
                    Attachment::parse(
                        "attachments[1]",
                        "logo.png",
                        "image/png",
                        Bytes::from_static(b"\x89PNG"),
                        "logo",
                    )
                    .unwrap(),
                ],
                headers: vec![CustomHeader::parse("X-Campaign", "spring").unwrap()],
                importance: Some(Importance::High),
                save_to_sent_items: true,
            },
            1 << 20,
        )
        .unwrap()
    }

    #[test]
    fn every_field_survives_a_round_trip_through_a_mime_parser() {
        let from = Mailbox::parse("mailbox", "noreply@contoso.com").unwrap();
        let raw = build(
            &message(),
            Envelope {
                from: &from,
                message_id: "0190-abc",
                date: Utc::now(),
            },
            AttachmentSelection::All,
        );
        let parsed = MessageParser::default().parse(&raw).unwrap();
        assert_eq!(parsed.subject(), Some("Quarterly report – Q3"));
        assert_eq!(parsed.message_id(), Some("0190-abc@contoso.com"));
        let to = parsed.to().unwrap().first().unwrap();
        assert_eq!(to.address(), Some("bob@example.com"));
        assert_eq!(to.name(), Some("Bob Smith"));
        assert_eq!(
            parsed.cc().unwrap().first().unwrap().address(),
            Some("carol@example.org")
        );
        assert_eq!(
            parsed.bcc().unwrap().first().unwrap().address(),
            Some("dave@example.net")
        );
        assert_eq!(parsed.body_text(0).as_deref(), Some("Plain text"));
        assert!(parsed.body_html(0).unwrap().contains("cid:logo"));
        assert_eq!(
            parsed.header_raw("X-Campaign").map(str::trim),
            Some("spring")
        );
        assert_eq!(parsed.header_raw("Importance").map(str::trim), Some("high"));
        let attachments: Vec<_> = parsed.attachments().collect();
        assert_eq!(attachments.len(), 2);
        let pdf = attachments
            .iter()
            .find(|a| a.attachment_name() == Some("report.pdf"))
            .unwrap();
        assert_eq!(pdf.contents(), b"%PDF-1.7 fake");
        let logo = attachments
            .iter()
            .find(|a| a.content_id() == Some("logo"))
            .unwrap();
        assert_eq!(logo.contents(), b"\x89PNG");
    }

    #[test]
    fn attachments_can_be_left_out_for_separate_upload() {
        let from = Mailbox::parse("mailbox", "noreply@contoso.com").unwrap();
        let raw = build(
            &message(),
            Envelope {
                from: &from,
                message_id: "id",
                date: Utc::now(),
            },
            AttachmentSelection::None,
        );
        let parsed = MessageParser::default().parse(&raw).unwrap();
        assert_eq!(parsed.attachments().count(), 0);
        assert_eq!(parsed.body_text(0).as_deref(), Some("Plain text"));
    }

    #[test]
    fn a_text_attachment_travels_byte_for_byte() {
        let bytes = Bytes::from_static(b"a;b\nlatin-1: \xe9\x80\r\nend");
        let message = OutgoingMessage::new(
            MessageParts {
                to: vec![Recipient::parse("to[0]", "bob@example.com", "").unwrap()],
                attachments: vec![
                    Attachment::parse("attachments[0]", "data.csv", "text/csv", bytes.clone(), "")
                        .unwrap(),
                ],
                ..Default::default()
            },
            1 << 20,
        )
        .unwrap();
        let from = Mailbox::parse("mailbox", "noreply@contoso.com").unwrap();
        let raw = build(
            &message,
            Envelope {
                from: &from,
                message_id: "id",
                date: Utc::now(),
            },
            AttachmentSelection::All,
        );
        let text = String::from_utf8_lossy(&raw);
        let part = text.split("Content-Type: text/csv").nth(1).unwrap();
        assert!(part.starts_with("\r\n"), "no charset is claimed: {text}");
        assert!(part.contains("Content-Transfer-Encoding: base64"), "{text}");
        let body: String = part
            .split("\r\n\r\n")
            .nth(1)
            .unwrap()
            .split("\r\n--")
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .unwrap(),
            &bytes[..]
        );
    }
}
