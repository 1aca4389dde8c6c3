//! The JSON form: Graph's `message` resource, with Graph's spellings (`toRecipients`,
//! `fileAttachment`, `High`), serialised straight from the parsed message without copying it.

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use serde::{Serialize, Serializer};

use crate::domain::{Attachment, Importance, OutgoingMessage, Recipient};

/// The JSON body of `POST /me/sendMail`.
pub fn json_send_mail(
    message: &OutgoingMessage,
    attachments: &[Attachment],
    internet_message_id: &str,
) -> Bytes {
    let mut body = Vec::new();
    write_send_mail(&mut body, message, attachments, internet_message_id);
    Bytes::from(body)
}

/// Writes the JSON body of `POST /me/sendMail` (to a counter, to measure it).
pub(super) fn write_send_mail(
    writer: impl std::io::Write,
    message: &OutgoingMessage,
    attachments: &[Attachment],
    internet_message_id: &str,
) {
    let body = SendMailBody {
        message: MessageResource::new(message, attachments, internet_message_id),
        save_to_sent_items: (!message.save_to_sent_items()).then_some(false),
    };
    // Serialising these types into memory cannot fail: no map has non-string keys.
    let _ = serde_json::to_writer(writer, &body);
}

/// The JSON sendMail body's size, measured without building it.
pub(super) fn send_mail_len(message: &OutgoingMessage, internet_message_id: &str) -> usize {
    let mut counter = ByteCounter(0);
    write_send_mail(
        &mut counter,
        message,
        message.attachments(),
        internet_message_id,
    );
    counter.0
}

/// Bytes written, nothing kept.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

/// The JSON body of `POST /me/messages` (a draft).
pub fn json_draft(
    message: &OutgoingMessage,
    attachments: &[Attachment],
    internet_message_id: &str,
) -> Bytes {
    let resource = MessageResource::new(message, attachments, internet_message_id);
    Bytes::from(serde_json::to_vec(&resource).unwrap_or_default())
}

/// The JSON body of `POST /me/messages/{id}/attachments`: one `fileAttachment`.
pub fn json_file_attachment(attachment: &Attachment) -> Bytes {
    Bytes::from(serde_json::to_vec(&FileAttachmentJson::new(attachment)).unwrap_or_default())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SendMailBody<'a> {
    message: MessageResource<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    save_to_sent_items: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageResource<'a> {
    subject: &'a str,
    body: BodyJson<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    to_recipients: Vec<RecipientJson<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cc_recipients: Vec<RecipientJson<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bcc_recipients: Vec<RecipientJson<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reply_to: Vec<RecipientJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    importance: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    internet_message_headers: Vec<HeaderJson<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<FileAttachmentJson<'a>>,
    /// Settable when a message is created (message resource: "updatable only if isDraft is
    /// true"); the marker the service finds the message by in Sent Items.
    internet_message_id: &'a str,
}

impl<'a> MessageResource<'a> {
    fn new(
        message: &'a OutgoingMessage,
        attachments: &'a [Attachment],
        internet_message_id: &'a str,
    ) -> Self {
        let recipients = |list: &'a [Recipient]| list.iter().map(RecipientJson::new).collect();
        let body = match (message.html_body(), message.text_body()) {
            (Some(html), _) => BodyJson {
                content_type: "HTML",
                content: html,
            },
            (None, text) => BodyJson {
                content_type: "Text",
                content: text.unwrap_or_default(),
            },
        };
        Self {
            subject: message.subject(),
            body,
            to_recipients: recipients(message.to()),
            cc_recipients: recipients(message.cc()),
            bcc_recipients: recipients(message.bcc()),
            reply_to: recipients(message.reply_to()),
            importance: message.importance().map(graph_importance),
            internet_message_headers: message
                .headers()
                .iter()
                .map(|h| HeaderJson {
                    name: &h.name,
                    value: &h.value,
                })
                .collect(),
            attachments: attachments.iter().map(FileAttachmentJson::new).collect(),
            internet_message_id,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BodyJson<'a> {
    content_type: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecipientJson<'a> {
    email_address: AddressJson<'a>,
}

impl<'a> RecipientJson<'a> {
    fn new(recipient: &'a Recipient) -> Self {
        Self {
            email_address: AddressJson {
                address: recipient.address.as_str(),
                name: recipient.name.as_deref(),
            },
        }
    }
}

#[derive(Serialize)]
struct AddressJson<'a> {
    address: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct HeaderJson<'a> {
    name: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileAttachmentJson<'a> {
    #[serde(rename = "@odata.type")]
    odata_type: &'static str,
    name: &'a str,
    content_type: &'a str,
    #[serde(serialize_with = "as_base64")]
    content_bytes: &'a [u8],
    is_inline: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_id: Option<&'a str>,
}

impl<'a> FileAttachmentJson<'a> {
    fn new(attachment: &'a Attachment) -> Self {
        Self {
            odata_type: "#microsoft.graph.fileAttachment",
            name: &attachment.filename,
            content_type: &attachment.content_type,
            content_bytes: &attachment.content,
            is_inline: attachment.is_inline(),
            content_id: attachment.content_id.as_deref(),
        }
    }
}

/// Graph's spelling of an importance.
fn graph_importance(importance: Importance) -> &'static str {
    match importance {
        Importance::Low => "Low",
        Importance::Normal => "Normal",
        Importance::High => "High",
    }
}

fn as_base64<S: Serializer>(bytes: &&[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&STANDARD.encode(bytes))
}
