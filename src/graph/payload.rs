//! What goes over the wire to Graph, and how each message's form is chosen.
//!
//! - **JSON** (`message` resource): the common case.
//! - **MIME** (base64 of the RFC 5322 message, `Content-Type: text/plain`): when JSON cannot say
//!   it: a text and an HTML body together, or more than five custom headers.
//! - **Draft + upload sessions**: when attachments reach 3 MB or the request body would pass
//!   Graph's ~4 MB limit. The draft carries the rest of the message in one of the two forms
//!   above; large attachments are uploaded in chunks.

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use chrono::{DateTime, Utc};

pub use super::json::{json_draft, json_send_mail};
use crate::{
    domain::{Attachment, Mailbox, OutgoingMessage},
    mime::{self, AttachmentSelection, Envelope},
};

/// Graph's limit of custom headers in the JSON form.
pub const MAX_JSON_HEADERS: usize = 5;
/// Attachments from this total size on need a draft and upload sessions.
pub const INLINE_ATTACHMENT_LIMIT: u64 = 3 * 1024 * 1024;
/// Largest request body sent to Graph (Graph refuses bodies over about 4 MB).
pub const MAX_REQUEST_BODY: usize = 4_000_000;
/// Upload chunk size: a multiple of 320 KiB below 4 MiB, as Graph asks.
pub const UPLOAD_CHUNK: usize = 10 * 320 * 1024;

/// A request body for `sendMail` or for creating a draft.
#[derive(Debug, Clone)]
pub enum Payload {
    /// `application/json`.
    Json(Bytes),
    /// `text/plain`: base64 of a MIME message.
    Mime(Bytes),
}

impl Payload {
    /// The body's bytes.
    pub fn bytes(&self) -> &Bytes {
        match self {
            Self::Json(b) | Self::Mime(b) => b,
        }
    }

    /// Its content type.
    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Json(_) => "application/json",
            Self::Mime(_) => "text/plain",
        }
    }

    /// `json` or `mime`, for logs.
    pub fn form(&self) -> &'static str {
        match self {
            Self::Json(_) => "json",
            Self::Mime(_) => "mime",
        }
    }
}

/// How a message will be sent.
#[derive(Debug, Clone)]
pub enum Plan {
    /// One `POST /me/sendMail`.
    Direct(Payload),
    /// A draft with `draft` as its body, `uploads` attached through upload sessions, then sent.
    Draft {
        draft: Payload,
        uploads: Vec<Attachment>,
    },
}

/// Whether JSON cannot express the message.
pub fn needs_mime(message: &OutgoingMessage) -> bool {
    (message.text_body().is_some() && message.html_body().is_some())
        || message.headers().len() > MAX_JSON_HEADERS
}

/// Chooses the form and builds the body.
pub fn plan(
    message: &OutgoingMessage,
    from: &Mailbox,
    message_id: &str,
    date: DateTime<Utc>,
) -> Plan {
    let mime = needs_mime(message);
    if message.attachment_bytes() < INLINE_ATTACHMENT_LIMIT {
        let payload = if mime {
            mime_payload(message, from, message_id, date, AttachmentSelection::All)
        } else {
            Payload::Json(json_send_mail(message, message.attachments()))
        };
        if payload.bytes().len() <= MAX_REQUEST_BODY {
            return Plan::Direct(payload);
        }
    }
    // Too large for one request: everything but the attachments goes into the draft.
    let draft = if mime {
        mime_payload(message, from, message_id, date, AttachmentSelection::None)
    } else {
        Payload::Json(json_draft(message, &[]))
    };
    Plan::Draft {
        draft,
        uploads: message.attachments().to_vec(),
    }
}

/// The MIME form: base64 of the RFC 5322 message.
pub fn mime_payload(
    message: &OutgoingMessage,
    from: &Mailbox,
    message_id: &str,
    date: DateTime<Utc>,
    attachments: AttachmentSelection,
) -> Payload {
    let raw = mime::build(
        message,
        Envelope {
            from,
            message_id,
            date,
        },
        attachments,
    );
    Payload::Mime(Bytes::from(STANDARD.encode(raw)))
}

/// The body of `createUploadSession`.
pub fn upload_session_body(attachment: &Attachment) -> Bytes {
    let body = serde_json::json!({
        "AttachmentItem": {
            "attachmentType": "file",
            "name": attachment.filename,
            "size": attachment.content.len(),
            "contentType": attachment.content_type,
            "isInline": attachment.is_inline(),
            "contentId": attachment.content_id,
        }
    });
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::domain::{CustomHeader, Importance, MessageParts, Recipient};

    fn parts() -> MessageParts {
        MessageParts {
            to: vec![Recipient::parse("to[0]", "bob@example.com", "Bob").unwrap()],
            subject: "Hi".into(),
            text_body: "Text".into(),
            ..Default::default()
        }
    }

    fn from() -> Mailbox {
        Mailbox::parse("mailbox", "noreply@contoso.com").unwrap()
    }

    fn json_of(plan: Plan) -> Value {
        match plan {
            Plan::Direct(Payload::Json(bytes)) => serde_json::from_slice(&bytes).unwrap(),
            other => panic!("expected direct JSON, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_message_is_direct_json_in_graphs_shape() {
        let message = OutgoingMessage::new(
            MessageParts {
                importance: Some(Importance::High),
                headers: vec![CustomHeader::parse("X-Tag", "a").unwrap()],
                save_to_sent_items: false,
                ..parts()
            },
            1 << 20,
        )
        .unwrap();
        let json = json_of(plan(&message, &from(), "id", Utc::now()));
        assert_eq!(json["message"]["body"]["contentType"], "Text");
        assert_eq!(
            json["message"]["toRecipients"][0]["emailAddress"]["address"],
            "bob@example.com"
        );
        assert_eq!(json["message"]["importance"], "High");
        assert_eq!(
            json["message"]["internetMessageHeaders"][0]["name"],
            "X-Tag"
        );
        assert_eq!(json["saveToSentItems"], false);
    }

    #[test]
    fn save_to_sent_items_is_left_out_unless_false() {
        let message = OutgoingMessage::new(
            MessageParts {
                save_to_sent_items: true,
                ..parts()
            },
            1 << 20,
        )
        .unwrap();
        let json = json_of(plan(&message, &from(), "id", Utc::now()));
        assert!(json.get("saveToSentItems").is_none());
    }

    #[test]
    fn both_bodies_or_six_headers_need_mime() {
        let both = OutgoingMessage::new(
            MessageParts {
                html_body: "<p>x</p>".into(),
                ..parts()
            },
            1 << 20,
        )
        .unwrap();
        assert!(matches!(
            plan(&both, &from(), "id", Utc::now()),
            Plan::Direct(Payload::Mime(_))
        ));
        let headers = (0..6)
            .map(|i| CustomHeader::parse(&format!("X-H{i}"), "v").unwrap())
            .collect();
        let six = OutgoingMessage::new(MessageParts { headers, ..parts() }, 1 << 20).unwrap();
        assert!(matches!(
            plan(&six, &from(), "id", Utc::now()),
            Plan::Direct(Payload::Mime(_))
        ));
    }

    #[test]
    fn three_megabytes_of_attachments_need_a_draft() {
        let big = Attachment::parse(
            "attachments[0]",
            "big.bin",
            "",
            Bytes::from(vec![1u8; INLINE_ATTACHMENT_LIMIT as usize]),
            "",
        )
        .unwrap();
        let message = OutgoingMessage::new(
            MessageParts {
                attachments: vec![big],
                ..parts()
            },
            150 << 20,
        )
        .unwrap();
        match plan(&message, &from(), "id", Utc::now()) {
            Plan::Draft {
                draft: Payload::Json(body),
                uploads,
            } => {
                let json: Value = serde_json::from_slice(&body).unwrap();
                assert!(json.get("attachments").is_none());
                assert_eq!(uploads.len(), 1);
            }
            other => panic!("expected a draft, got {other:?}"),
        }
    }

    #[test]
    fn attachments_travel_as_base64_file_attachments() {
        let logo = Attachment::parse(
            "attachments[0]",
            "logo.png",
            "image/png",
            Bytes::from_static(b"PNG"),
            "logo",
        )
        .unwrap();
        let message = OutgoingMessage::new(
            MessageParts {
                attachments: vec![logo],
                ..parts()
            },
            1 << 20,
        )
        .unwrap();
        let json = json_of(plan(&message, &from(), "id", Utc::now()));
        let attachment = &json["message"]["attachments"][0];
        assert_eq!(attachment["@odata.type"], "#microsoft.graph.fileAttachment");
        assert_eq!(attachment["contentBytes"], "UE5H");
        assert_eq!(attachment["isInline"], true);
        assert_eq!(attachment["contentId"], "logo");
    }
}
