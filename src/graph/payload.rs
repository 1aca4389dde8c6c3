//! What goes over the wire to Graph, and how each message's form is chosen.
//!
//! - **JSON** (`message` resource): the common case.
//! - **MIME** (base64 of the RFC 5322 message, `Content-Type: text/plain`): when JSON cannot say
//!   it: a text and an HTML body together, or more than five custom headers.
//! - **Draft**: when attachments reach 3 MB or the request body would pass Graph's ~4 MB limit.
//!   The draft carries the rest of the message in one of the two forms above; each attachment
//!   then takes the way "Attach large files to Outlook messages" prescribes for its size: under
//!   3 MB a `POST` on the draft's attachments, from 3 MB an upload session (Graph refuses
//!   upload sessions for smaller files with `ErrorAttachmentSizeShouldNotBeLessThanMinimumSize`).
//!
//! Sizes are measured before anything is serialised, so each body is built once.

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::json::send_mail_len;
pub use super::json::{json_draft, json_file_attachment, json_send_mail, upload_session_body};
use crate::{
    domain::{Attachment, Mailbox, OutgoingMessage, ValidationError, human_bytes},
    mime::{self, AttachmentSelection, Envelope},
};

/// Graph's limit of custom headers in the JSON form.
pub const MAX_JSON_HEADERS: usize = 5;
/// Attachments from this total size on need a draft.
pub const INLINE_ATTACHMENT_LIMIT: u64 = 3 * 1024 * 1024;
/// Attachments under this size are posted to a draft whole; from it on, uploaded in a session
/// (the documented 3 MB; a 3,000,000-byte file's post stays under the request limit).
pub const SMALL_ATTACHMENT_LIMIT: usize = 3_000_000;
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

/// How one attachment reaches a draft.
#[derive(Debug, Clone)]
pub enum DraftAttachment {
    /// `POST /me/messages/{id}/attachments` with this `fileAttachment` body.
    Post { name: String, body: Bytes },
    /// An upload session, in chunks.
    Upload(Attachment),
}

/// How a message will be sent.
#[derive(Debug, Clone)]
pub enum Plan {
    /// One `POST /me/sendMail`.
    Direct(Payload),
    /// A draft with `draft` as its body, the attachments added one by one, then sent.
    Draft {
        draft: Payload,
        attachments: Vec<DraftAttachment>,
    },
}

impl Plan {
    /// The form for logs: `json`, `mime`, `draft`.
    pub fn form(&self) -> &'static str {
        match self {
            Self::Direct(payload) => payload.form(),
            Self::Draft { .. } => "draft",
        }
    }
}

/// Whether JSON cannot express the message.
pub fn needs_mime(message: &OutgoingMessage) -> bool {
    (message.text_body().is_some() && message.html_body().is_some())
        || message.headers().len() > MAX_JSON_HEADERS
}

/// The marker Graph keeps with the message and can find it by in Sent Items: its
/// `internetMessageId` (JSON) or `Message-ID` (MIME), `<message_id@sending domain>`.
pub fn internet_message_id(message_id: &str, from: &Mailbox) -> String {
    format!("<{}>", mime::message_id_for(message_id, from))
}

/// Chooses the form and builds the bodies, each once. Refuses what no form can send: a body
/// too large for one Graph request, or `skip_sent_items` where Graph cannot honour it.
pub fn plan(
    message: &OutgoingMessage,
    from: &Mailbox,
    message_id: &str,
    date: DateTime<Utc>,
) -> Result<Plan, ValidationError> {
    let mime = needs_mime(message);
    if mime && !message.save_to_sent_items() {
        return Err(ValidationError::new(
            "skip_sent_items",
            "cannot be honoured for a message sent in the MIME form (text and HTML bodies \
             together, or more than five custom headers): Microsoft's MIME sendMail has no \
             saveToSentItems and always keeps a copy; send one body and at most five headers, \
             or leave skip_sent_items unset",
        ));
    }
    let envelope = Envelope {
        from,
        message_id,
        date,
    };
    if message.attachment_bytes() < INLINE_ATTACHMENT_LIMIT {
        if mime {
            let raw = mime::build(message, envelope, AttachmentSelection::All);
            if base64_len(raw.len()) <= MAX_REQUEST_BODY {
                return Ok(Plan::Direct(Payload::Mime(encode(&raw))));
            }
        } else if send_mail_len(message, &internet_message_id(message_id, from)) <= MAX_REQUEST_BODY
        {
            return Ok(Plan::Direct(Payload::Json(json_send_mail(
                message,
                message.attachments(),
                &internet_message_id(message_id, from),
            ))));
        }
    }
    if !message.save_to_sent_items() {
        return Err(ValidationError::new(
            "skip_sent_items",
            "cannot be honoured for a message with 3 MB or more of attachments: Microsoft sends \
             those through a draft, which always keeps a copy in Sent Items",
        ));
    }
    // Too large for one request: everything but the attachments goes into the draft.
    let draft = if mime {
        Payload::Mime(encode(&mime::build(
            message,
            envelope,
            AttachmentSelection::None,
        )))
    } else {
        Payload::Json(json_draft(
            message,
            &[],
            &internet_message_id(message_id, from),
        ))
    };
    if draft.bytes().len() > MAX_REQUEST_BODY {
        return Err(body_too_large(message, draft.bytes().len()));
    }
    let attachments = message.attachments().iter().map(draft_attachment).collect();
    Ok(Plan::Draft { draft, attachments })
}

/// The way an attachment reaches a draft, chosen by its size.
fn draft_attachment(attachment: &Attachment) -> DraftAttachment {
    if attachment.content.len() < SMALL_ATTACHMENT_LIMIT {
        DraftAttachment::Post {
            name: attachment.filename.clone(),
            body: json_file_attachment(attachment),
        }
    } else {
        DraftAttachment::Upload(attachment.clone())
    }
}

fn body_too_large(message: &OutgoingMessage, request_bytes: usize) -> ValidationError {
    let field = match (message.html_body(), message.text_body()) {
        (Some(html), Some(text)) if text.len() > html.len() => "text_body",
        (Some(_), _) => "html_body",
        _ => "text_body",
    };
    ValidationError::new(
        field,
        format!(
            "the message body needs a {} request, more than fits in one Microsoft Graph request \
             (4 MB, the limit for the message without its attachments); shorten the body or \
             send the content as an attachment",
            human_bytes(request_bytes as u64)
        ),
    )
}

fn base64_len(raw: usize) -> usize {
    raw.div_ceil(3) * 4
}

fn encode(raw: &[u8]) -> Bytes {
    Bytes::from(STANDARD.encode(raw))
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
            save_to_sent_items: true,
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
        let json = json_of(plan(&message, &from(), "id", Utc::now()).unwrap());
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
        let json = json_of(plan(&message, &from(), "id", Utc::now()).unwrap());
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
            plan(&both, &from(), "id", Utc::now()).unwrap(),
            Plan::Direct(Payload::Mime(_))
        ));
        let headers = (0..6)
            .map(|i| CustomHeader::parse(&format!("X-H{i}"), "v").unwrap())
            .collect();
        let six = OutgoingMessage::new(MessageParts { headers, ..parts() }, 1 << 20).unwrap();
        assert!(matches!(
            plan(&six, &from(), "id", Utc::now()).unwrap(),
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
        match plan(&message, &from(), "id", Utc::now()).unwrap() {
            Plan::Draft {
                draft: Payload::Json(body),
                attachments,
            } => {
                let json: Value = serde_json::from_slice(&body).unwrap();
                assert!(json.get("attachments").is_none());
                assert!(matches!(attachments[..], [DraftAttachment::Upload(_)]));
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
        let json = json_of(plan(&message, &from(), "id", Utc::now()).unwrap());
        let attachment = &json["message"]["attachments"][0];
        assert_eq!(attachment["@odata.type"], "#microsoft.graph.fileAttachment");
        assert_eq!(attachment["contentBytes"], "UE5H");
        assert_eq!(attachment["isInline"], true);
        assert_eq!(attachment["contentId"], "logo");
    }

    #[test]
    fn the_measured_size_is_the_size_sent_and_the_marker_travels() {
        let message = OutgoingMessage::new(parts(), 1 << 20).unwrap();
        let sent = json_send_mail(&message, &[], &internet_message_id("m-1", &from()));
        let marker = internet_message_id("m-1", &from());
        assert_eq!(send_mail_len(&message, &marker), sent.len());
        let json: Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(json["message"]["internetMessageId"], "<m-1@contoso.com>");
    }

    #[test]
    fn skip_sent_items_cannot_travel_as_mime() {
        let both = OutgoingMessage::new(
            MessageParts {
                html_body: "<p>x</p>".into(),
                save_to_sent_items: false,
                ..parts()
            },
            1 << 20,
        )
        .unwrap();
        let refused = plan(&both, &from(), "id", Utc::now()).unwrap_err();
        assert_eq!(refused.field, "skip_sent_items");
    }
}
