//! How Graph reads a message: the JSON `message` resource (unknown properties refused) and the
//! base64 MIME form, both turned into one [`Delivered`] shape.

use axum::{
    http::{HeaderMap, header},
    response::Response,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use mail_parser::{MessageParser, MimeHeaders};
use serde::Deserialize;

use super::{Delivered, DeliveredAttachment, MAX_BODY, graph_error};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SendMailJson {
    message: MessageJson,
    save_to_sent_items: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MessageJson {
    subject: Option<String>,
    body: Option<BodyJson>,
    #[serde(default)]
    to_recipients: Vec<RecipientJson>,
    #[serde(default)]
    cc_recipients: Vec<RecipientJson>,
    #[serde(default)]
    bcc_recipients: Vec<RecipientJson>,
    #[serde(default)]
    reply_to: Vec<RecipientJson>,
    importance: Option<String>,
    #[serde(default)]
    internet_message_headers: Vec<HeaderJson>,
    #[serde(default)]
    attachments: Vec<AttachmentJson>,
    /// Settable when the message is created ("Updatable only if isDraft is true", message
    /// resource); sendMail creates one.
    internet_message_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BodyJson {
    content_type: String,
    content: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RecipientJson {
    email_address: AddressJson,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddressJson {
    address: String,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderJson {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct AttachmentJson {
    #[serde(rename = "@odata.type")]
    odata_type: String,
    name: String,
    content_type: Option<String>,
    content_bytes: String,
    is_inline: Option<bool>,
    content_id: Option<String>,
}

pub(super) fn bad_request(code: &str, message: &str, crid: &str) -> Response {
    graph_error(400, code, message, crid)
}

/// Parses a JSON `message` resource as Graph validates it.
fn parse_message_json(message: MessageJson, crid: &str) -> Result<Delivered, Response> {
    if message.internet_message_headers.len() > 5 {
        return Err(bad_request(
            "InvalidInternetMessageHeaderCollection",
            "Maximum number of headers in one message should be less than or equal to 5.",
            crid,
        ));
    }
    for h in &message.internet_message_headers {
        if !h.name.to_ascii_lowercase().starts_with("x-") {
            return Err(bad_request(
                "InvalidInternetMessageHeader",
                "The internet message header name should start with 'x-' or 'X-'.",
                crid,
            ));
        }
    }
    let list = |r: Vec<RecipientJson>| -> Vec<(String, String)> {
        r.into_iter()
            .map(|r| {
                (
                    r.email_address.address,
                    r.email_address.name.unwrap_or_default(),
                )
            })
            .collect()
    };
    let mut attachments = Vec::new();
    for a in message.attachments {
        attachments.push(parse_file_attachment(a, crid)?);
    }
    if let Some(id) = &message.internet_message_id
        && !is_message_id(id)
    {
        return Err(bad_request(
            "ErrorInvalidInternetMessageId",
            "The internetMessageId must have the form <left@right> (RFC 2822).",
            crid,
        ));
    }
    let (text_body, html_body) = match message.body {
        Some(b) if b.content_type.eq_ignore_ascii_case("html") => (None, Some(b.content)),
        Some(b) if b.content_type.eq_ignore_ascii_case("text") => (Some(b.content), None),
        Some(_) => {
            return Err(bad_request(
                "RequestBodyRead",
                "Invalid body contentType.",
                crid,
            ));
        }
        None => (None, None),
    };
    if let Some(importance) = &message.importance
        && !["low", "normal", "high"].contains(&importance.to_ascii_lowercase().as_str())
    {
        return Err(bad_request("RequestBodyRead", "Invalid importance.", crid));
    }
    Ok(Delivered {
        form: "json".into(),
        client_request_id: crid.to_owned(),
        subject: message.subject.unwrap_or_default(),
        to: list(message.to_recipients),
        cc: list(message.cc_recipients),
        bcc: list(message.bcc_recipients),
        reply_to: list(message.reply_to),
        text_body,
        html_body,
        headers: message
            .internet_message_headers
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect(),
        importance: message.importance,
        save_to_sent_items: true,
        attachments,
        internet_message_id: message.internet_message_id,
        ..Default::default()
    })
}

/// A `fileAttachment` as Graph reads it.
pub(super) fn parse_file_attachment(
    a: AttachmentJson,
    crid: &str,
) -> Result<DeliveredAttachment, Response> {
    if a.odata_type != "#microsoft.graph.fileAttachment" {
        return Err(bad_request(
            "ErrorInvalidRequest",
            "Unsupported attachment type.",
            crid,
        ));
    }
    let Ok(bytes) = STANDARD.decode(&a.content_bytes) else {
        return Err(bad_request(
            "ErrorInvalidRequest",
            "Invalid base64 in contentBytes.",
            crid,
        ));
    };
    Ok(DeliveredAttachment::new(
        &a.name,
        a.content_type
            .as_deref()
            .unwrap_or("application/octet-stream"),
        a.content_id,
        a.is_inline.unwrap_or(false),
        &bytes,
    ))
}

/// `<left@right>`, as RFC 2822's msg-id.
fn is_message_id(id: &str) -> bool {
    id.strip_prefix('<')
        .and_then(|rest| rest.strip_suffix('>'))
        .and_then(|inner| inner.split_once('@'))
        .is_some_and(|(left, right)| {
            !left.is_empty()
                && !right.is_empty()
                && !id[1..id.len() - 1]
                    .chars()
                    .any(|c| c.is_whitespace() || c == '<' || c == '>')
        })
}

/// Parses a MIME body (base64 text) as Graph does.
fn parse_mime(body: &[u8], crid: &str) -> Result<Delivered, Response> {
    let text: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let Ok(raw) = STANDARD.decode(&text) else {
        return Err(bad_request(
            "ErrorMimeContentInvalidBase64String",
            "Invalid base64 string for MIME content.",
            crid,
        ));
    };
    let Some(parsed) = MessageParser::default().parse(&raw) else {
        return Err(bad_request(
            "ErrorMimeContentInvalid",
            "The MIME content is invalid.",
            crid,
        ));
    };
    let list = |a: Option<&mail_parser::Address>| -> Vec<(String, String)> {
        a.map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x.address().unwrap_or_default().to_owned(),
                        x.name().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
    };
    let headers = parsed
        .headers()
        .iter()
        .filter(|h| h.name().to_ascii_lowercase().starts_with("x-"))
        .map(|h| {
            (
                h.name().to_owned(),
                parsed
                    .header_raw(h.name())
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            )
        })
        .collect();
    let attachments = parsed
        .attachments()
        .map(|a| {
            let content_id = a.content_id().map(str::to_owned);
            let inline = content_id.is_some();
            let content_type = a
                .content_type()
                .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default()))
                .unwrap_or_default();
            DeliveredAttachment::new(
                a.attachment_name().unwrap_or_default(),
                &content_type,
                content_id,
                inline,
                &attachment_bytes(&raw, a),
            )
        })
        .collect();
    let from = parsed
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or_default()
        .to_owned();
    Ok(Delivered {
        form: "mime".into(),
        from,
        internet_message_id: parsed.message_id().map(|id| format!("<{id}>")),
        client_request_id: crid.to_owned(),
        subject: parsed.subject().unwrap_or_default().to_owned(),
        to: list(parsed.to()),
        cc: list(parsed.cc()),
        bcc: list(parsed.bcc()),
        reply_to: list(parsed.reply_to()),
        text_body: part_is(&parsed, parsed.text_body.first(), "plain")
            .then(|| parsed.body_text(0).map(|t| t.into_owned()))
            .flatten(),
        html_body: part_is(&parsed, parsed.html_body.first(), "html")
            .then(|| parsed.body_html(0).map(|t| t.into_owned()))
            .flatten(),
        headers,
        importance: parsed.header_raw("Importance").map(|v| v.trim().to_owned()),
        save_to_sent_items: true,
        attachments,
        ..Default::default()
    })
}

/// Whether a body part is text/<subtype> (a part without Content-Type is text/plain).
fn part_is(parsed: &mail_parser::Message<'_>, id: Option<&u32>, subtype: &str) -> bool {
    let Some(part) = id.and_then(|id| parsed.part(*id)) else {
        return false;
    };
    match part.content_type() {
        Some(ct) => {
            ct.ctype().eq_ignore_ascii_case("text")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case(subtype))
        }
        None => subtype == "plain",
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Parses a sendMail or draft body in either form.
pub(super) fn parse_body(
    headers: &HeaderMap,
    body: &[u8],
    crid: &str,
    wrapped: bool,
) -> Result<Delivered, Response> {
    if body.len() > MAX_BODY {
        return Err(graph_error(
            413,
            "RequestEntityTooLarge",
            "The request body is too large.",
            crid,
        ));
    }
    let ctype = content_type(headers);
    let mut delivered = if ctype.starts_with("text/plain") {
        parse_mime(body, crid)?
    } else if ctype.starts_with("application/json") {
        if wrapped {
            let parsed: SendMailJson = serde_json::from_slice(body)
                .map_err(|e| bad_request("RequestBodyRead", &format!("Invalid JSON: {e}"), crid))?;
            let mut delivered = parse_message_json(parsed.message, crid)?;
            delivered.save_to_sent_items = parsed.save_to_sent_items.unwrap_or(true);
            delivered
        } else {
            let parsed: MessageJson = serde_json::from_slice(body)
                .map_err(|e| bad_request("RequestBodyRead", &format!("Invalid JSON: {e}"), crid))?;
            parse_message_json(parsed, crid)?
        }
    } else {
        return Err(graph_error(
            415,
            "UnsupportedMediaType",
            "Unsupported content type.",
            crid,
        ));
    };
    delivered.client_request_id = crid.to_owned();
    Ok(delivered)
}

/// An attachment's bytes as they travel: the part's raw body decoded from base64, or the
/// parser's contents for other encodings. (A MIME parser reads a text/* part as text, in a
/// charset nobody declared; the bytes on the wire are what a recipient saves.)
pub fn attachment_bytes(raw: &[u8], part: &mail_parser::MessagePart<'_>) -> Vec<u8> {
    use base64::Engine;
    use mail_parser::MimeHeaders;
    let base64 = part
        .content_transfer_encoding()
        .is_some_and(|e| e.eq_ignore_ascii_case("base64"));
    if !base64 {
        return part.contents().to_vec();
    }
    let body: Vec<u8> = raw[part.raw_body_offset() as usize..part.raw_end_offset() as usize]
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&body)
        .unwrap_or_else(|_| part.contents().to_vec())
}
