//! Attached files: a plain file name, a valid MIME type, and for inline parts a content id.

use bytes::Bytes;

use super::{ValidationError, quoted, reject_line_breaks};

/// One attached file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    /// A valid MIME type, `application/octet-stream` when the caller gave none.
    pub content_type: String,
    pub content: Bytes,
    /// Set for inline parts referenced from the HTML body as `cid:…`.
    pub content_id: Option<String>,
}

impl Attachment {
    /// Parses the attachment at `field` (such as `attachments[0]`).
    pub fn parse(
        field: &str,
        filename: &str,
        content_type: &str,
        content: Bytes,
        content_id: &str,
    ) -> Result<Self, ValidationError> {
        let filename_field = format!("{field}.filename");
        if filename.trim().is_empty() {
            return Err(ValidationError::new(filename_field, "is required"));
        }
        reject_line_breaks(&filename_field, filename)?;
        if filename.contains(['/', '\\']) || filename.chars().any(char::is_control) {
            return Err(ValidationError::new(
                filename_field,
                format!(
                    "{} must be a plain file name without path separators or control characters",
                    quoted(filename)
                ),
            ));
        }
        let content_type = parse_content_type(&format!("{field}.content_type"), content_type)?;
        let content_id = parse_content_id(&format!("{field}.content_id"), content_id)?;
        Ok(Self {
            filename: filename.to_owned(),
            content_type,
            content,
            content_id,
        })
    }

    /// Whether this is an inline part.
    pub fn is_inline(&self) -> bool {
        self.content_id.is_some()
    }
}

fn parse_content_type(field: &str, value: &str) -> Result<String, ValidationError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok("application/octet-stream".to_owned());
    }
    reject_line_breaks(field, value)?;
    match value.parse::<mime::Mime>() {
        Ok(parsed) if !parsed.subtype().as_str().is_empty() => Ok(value.to_owned()),
        _ => Err(ValidationError::new(
            field,
            format!(
                "{} is not a MIME type such as application/pdf",
                quoted(value)
            ),
        )),
    }
}

fn parse_content_id(field: &str, value: &str) -> Result<Option<String>, ValidationError> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > 255
        || value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>' || !c.is_ascii())
    {
        return Err(ValidationError::new(
            field,
            format!(
                "{} must be printable ASCII without spaces or angle brackets, at most 255 characters",
                quoted(value)
            ),
        ));
    }
    Ok(Some(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_need_a_file_name_and_a_valid_type() {
        let ok = Attachment::parse("attachments[0]", "a.pdf", "", Bytes::new(), "").unwrap();
        assert_eq!(ok.content_type, "application/octet-stream");
        let error =
            Attachment::parse("attachments[1]", "", "text/plain", Bytes::new(), "").unwrap_err();
        assert_eq!(error.field, "attachments[1].filename");
        let error = Attachment::parse("attachments[2]", "a.txt", "not a type", Bytes::new(), "")
            .unwrap_err();
        assert_eq!(error.field, "attachments[2].content_type");
        let error =
            Attachment::parse("attachments[3]", "../etc/passwd", "", Bytes::new(), "").unwrap_err();
        assert_eq!(error.field, "attachments[3].filename");
        let error = Attachment::parse(
            "attachments[4]",
            "a.png",
            "image/png",
            Bytes::new(),
            "<logo>",
        )
        .unwrap_err();
        assert_eq!(error.field, "attachments[4].content_id");
        let inline =
            Attachment::parse("attachments[5]", "a.png", "image/png", Bytes::new(), "logo")
                .unwrap();
        assert!(inline.is_inline());
    }
}
