//! A whole outgoing message: recipients, bodies, attachments, headers.

use super::{Attachment, EmailAddress, ValidationError, quoted, reject_line_breaks};
use crate::variables;

/// Microsoft's limit of recipients (to, cc and bcc together) per message.
pub const MAX_RECIPIENTS: usize = 500;
/// Custom headers per message.
pub const MAX_HEADERS: usize = 50;
/// Reply-to addresses per message.
pub const MAX_REPLY_TO: usize = 50;
/// Attachments per message.
pub const MAX_ATTACHMENTS: usize = 250;

/// How many entries a request's lists hold, counted before any of them is parsed: a request
/// with ten million tiny recipients is refused by its count, not after parsing them all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListCounts {
    pub recipients: usize,
    pub reply_to: usize,
    pub attachments: usize,
    pub headers: usize,
}

impl ListCounts {
    /// The first list over its limit, as the validation error a caller gets.
    pub fn check(&self) -> Result<(), ValidationError> {
        if self.recipients > MAX_RECIPIENTS {
            return Err(too_many_recipients(self.recipients));
        }
        for (field, count, limit) in [
            ("reply_to", self.reply_to, MAX_REPLY_TO),
            ("attachments", self.attachments, MAX_ATTACHMENTS),
            ("headers", self.headers, MAX_HEADERS),
        ] {
            if count > limit {
                return Err(ValidationError::new(
                    field,
                    format!("{count} entries; at most {limit} per message"),
                ));
            }
        }
        Ok(())
    }
}

fn too_many_recipients(recipients: usize) -> ValidationError {
    ValidationError::new(
        "recipients",
        format!(
            "{recipients} recipients in to, cc and bcc; Microsoft allows at most {MAX_RECIPIENTS} \
             per message"
        ),
    )
}

/// One recipient or reply-to address with an optional display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: EmailAddress,
    pub name: Option<String>,
}

impl Recipient {
    /// Parses the recipient at `field` (such as `to[2]`).
    pub fn parse(field: &str, address: &str, name: &str) -> Result<Self, ValidationError> {
        let address = EmailAddress::parse(&format!("{field}.address"), address)?;
        let name_field = format!("{field}.name");
        reject_line_breaks(&name_field, name)?;
        if name.chars().any(char::is_control) {
            return Err(ValidationError::new(
                name_field,
                "must not contain control characters",
            ));
        }
        let name = name.trim();
        Ok(Self {
            address,
            name: (!name.is_empty()).then(|| name.to_owned()),
        })
    }
}

/// A custom `X-` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomHeader {
    pub name: String,
    pub value: String,
}

impl CustomHeader {
    /// Parses one entry of the `headers` map.
    pub fn parse(name: &str, value: &str) -> Result<Self, ValidationError> {
        let field = format!("headers[{}]", quoted(name));
        let is_field_name_char = |c: char| c.is_ascii_graphic() && c != ':';
        // `get`, not slicing: a name such as "x€" has no character boundary at byte 2.
        if name.len() < 3
            || !name.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("x-"))
            || !name.chars().all(is_field_name_char)
            || name.len() > 76
        {
            return Err(ValidationError::new(
                field,
                "header names must start with \"X-\" and consist of printable ASCII without \
                 spaces or colons (at most 76 characters)",
            ));
        }
        reject_line_breaks(&field, value)?;
        if value.len() > 998 {
            return Err(ValidationError::new(field, "is longer than 998 characters"));
        }
        Ok(Self {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// How important mail clients should show the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Importance {
    Low,
    Normal,
    High,
}

/// The parts of a message, each already parsed; [`OutgoingMessage::new`] checks the whole.
#[derive(Debug, Clone, Default)]
pub struct MessageParts {
    pub to: Vec<Recipient>,
    pub cc: Vec<Recipient>,
    pub bcc: Vec<Recipient>,
    pub reply_to: Vec<Recipient>,
    pub subject: String,
    pub text_body: String,
    pub html_body: String,
    pub attachments: Vec<Attachment>,
    pub headers: Vec<CustomHeader>,
    pub importance: Option<Importance>,
    pub save_to_sent_items: bool,
}

/// A message that every transport can send as it is.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    parts: MessageParts,
    size: u64,
}

impl OutgoingMessage {
    /// Checks what concerns the message as a whole: recipients, subject, header names, size.
    pub fn new(parts: MessageParts, max_bytes: u64) -> Result<Self, ValidationError> {
        let recipients = parts.to.len() + parts.cc.len() + parts.bcc.len();
        if recipients == 0 {
            return Err(ValidationError::new(
                "to",
                "at least one recipient is required in to, cc or bcc",
            ));
        }
        ListCounts {
            recipients,
            reply_to: parts.reply_to.len(),
            attachments: parts.attachments.len(),
            headers: parts.headers.len(),
        }
        .check()?;
        reject_line_breaks("subject", &parts.subject)?;
        let mut seen = std::collections::HashSet::with_capacity(parts.headers.len());
        for header in &parts.headers {
            if !seen.insert(header.name.to_ascii_lowercase()) {
                return Err(ValidationError::new(
                    format!("headers[{}]", quoted(&header.name)),
                    "is given twice (header names are case-insensitive)",
                ));
            }
        }
        let size = message_size(&parts);
        if size > max_bytes {
            return Err(ValidationError::new(
                "message",
                format!(
                    "is {} with its attachments, over the limit of {} per message ({})",
                    human_bytes(size),
                    human_bytes(max_bytes),
                    variables::MAX_MESSAGE_BYTES
                ),
            ));
        }
        Ok(Self { parts, size })
    }

    pub fn to(&self) -> &[Recipient] {
        &self.parts.to
    }
    pub fn cc(&self) -> &[Recipient] {
        &self.parts.cc
    }
    pub fn bcc(&self) -> &[Recipient] {
        &self.parts.bcc
    }
    pub fn reply_to(&self) -> &[Recipient] {
        &self.parts.reply_to
    }
    pub fn subject(&self) -> &str {
        &self.parts.subject
    }
    /// The plain-text body, if any.
    pub fn text_body(&self) -> Option<&str> {
        Some(self.parts.text_body.as_str()).filter(|b| !b.is_empty())
    }
    /// The HTML body, if any.
    pub fn html_body(&self) -> Option<&str> {
        Some(self.parts.html_body.as_str()).filter(|b| !b.is_empty())
    }
    pub fn attachments(&self) -> &[Attachment] {
        &self.parts.attachments
    }
    pub fn headers(&self) -> &[CustomHeader] {
        &self.parts.headers
    }
    pub fn importance(&self) -> Option<Importance> {
        self.parts.importance
    }
    pub fn save_to_sent_items(&self) -> bool {
        self.parts.save_to_sent_items
    }
    /// Bytes of content: bodies, subject, headers and attachments before encoding.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Bytes of attachment content.
    pub fn attachment_bytes(&self) -> u64 {
        self.parts
            .attachments
            .iter()
            .map(|a| a.content.len() as u64)
            .sum()
    }
    /// Every recipient's domain, for logs.
    pub fn recipient_domains(&self) -> Vec<String> {
        let mut domains: Vec<String> = self
            .parts
            .to
            .iter()
            .chain(&self.parts.cc)
            .chain(&self.parts.bcc)
            .map(|r| r.address.domain())
            .collect();
        domains.sort();
        domains.dedup();
        domains
    }
}

fn message_size(parts: &MessageParts) -> u64 {
    let text = parts.subject.len() + parts.text_body.len() + parts.html_body.len();
    let headers: usize = parts
        .headers
        .iter()
        .map(|h| h.name.len() + h.value.len())
        .sum();
    let attachments: usize = parts.attachments.iter().map(|a| a.content.len()).sum();
    (text + headers + attachments) as u64
}

/// A byte count for people: `150.0 MB` (MB = 2^20 bytes, as Microsoft counts).
pub fn human_bytes(bytes: u64) -> String {
    const MB: f64 = 1024.0 * 1024.0;
    if bytes >= 1024 * 1024 {
        format!("{:.1} MB", bytes as f64 / MB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn recipient(address: &str) -> Recipient {
        Recipient::parse("to[0]", address, "").unwrap()
    }

    fn parts() -> MessageParts {
        MessageParts {
            to: vec![recipient("bob@example.com")],
            subject: "Hello".into(),
            text_body: "Hi".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_message_needs_a_recipient_in_to_cc_or_bcc() {
        let error = OutgoingMessage::new(
            MessageParts {
                to: vec![],
                ..parts()
            },
            1000,
        )
        .unwrap_err();
        assert_eq!(error.field, "to");
        let bcc_only = OutgoingMessage::new(
            MessageParts {
                to: vec![],
                bcc: vec![recipient("hidden@example.com")],
                ..parts()
            },
            1000,
        );
        assert!(bcc_only.is_ok());
    }

    #[test]
    fn more_than_500_recipients_are_refused() {
        let many = (0..501)
            .map(|i| recipient(&format!("r{i}@example.com")))
            .collect();
        let error = OutgoingMessage::new(
            MessageParts {
                to: many,
                ..parts()
            },
            1000,
        )
        .unwrap_err();
        assert_eq!(error.field, "recipients");
        assert!(error.reason.contains("501"));
    }

    #[test]
    fn the_size_limit_names_the_setting() {
        let attachment = Attachment::parse(
            "attachments[0]",
            "big.bin",
            "",
            Bytes::from(vec![0u8; 2 * 1024 * 1024]),
            "",
        )
        .unwrap();
        let error = OutgoingMessage::new(
            MessageParts {
                attachments: vec![attachment],
                ..parts()
            },
            1024 * 1024,
        )
        .unwrap_err();
        assert_eq!(error.field, "message");
        assert!(error.reason.contains("GRAPH_MAILER_MAX_MESSAGE_BYTES"));
    }

    #[test]
    fn subjects_and_names_must_not_carry_line_breaks() {
        let error = OutgoingMessage::new(
            MessageParts {
                subject: "Hi\r\nBcc: evil@example.com".into(),
                ..parts()
            },
            1000,
        )
        .unwrap_err();
        assert_eq!(error.field, "subject");
        let error = Recipient::parse("cc[1]", "a@example.com", "A\nB").unwrap_err();
        assert_eq!(error.field, "cc[1].name");
    }

    #[test]
    fn header_names_must_be_x_headers_of_field_name_characters() {
        assert!(CustomHeader::parse("X-Campaign", "spring").is_ok());
        assert!(CustomHeader::parse("x-lower", "ok").is_ok());
        for bad in ["Subject", "X-", "X-Has Space", "X-Colon:", "Reply-To"] {
            let error = CustomHeader::parse(bad, "v").unwrap_err();
            assert!(error.field.starts_with("headers["), "{bad}");
        }
        assert!(CustomHeader::parse("X-A", "line\r\nbreak").is_err());
        let twice = vec![
            CustomHeader::parse("X-A", "1").unwrap(),
            CustomHeader::parse("x-a", "2").unwrap(),
        ];
        assert!(
            OutgoingMessage::new(
                MessageParts {
                    headers: twice,
                    ..parts()
                },
                1000
            )
            .is_err()
        );
    }
}
