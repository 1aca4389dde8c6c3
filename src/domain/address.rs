//! Email addresses and the mailboxes the service sends as.

use std::fmt;

use email_address::Options;

use super::{ValidationError, quoted};

/// An RFC 5321 mailbox such as `bob@example.com`: no display name, no surrounding space.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Parses an address; `field` names it in the error.
    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        let options = Options::default().without_display_text();
        if value.is_empty() {
            return Err(ValidationError::new(field, "is required"));
        }
        match email_address::EmailAddress::parse_with_options(value, options) {
            Ok(_) if !value.contains(char::is_whitespace) => Ok(Self(value.to_owned())),
            _ => Err(ValidationError::new(
                field,
                format!("{} is not a valid email address", quoted(value)),
            )),
        }
    }

    /// The address as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after the `@`, lower case: what logs and metrics may show.
    pub fn domain(&self) -> String {
        self.0
            .rsplit_once('@')
            .map(|(_, domain)| domain.to_ascii_lowercase())
            .unwrap_or_default()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Debug shows only the domain: a whole address must never reach a log by accident.
impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress(…@{})", self.domain())
    }
}

/// A mailbox the service sends as: an address in lower case, the key of its connection.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mailbox(String);

impl Mailbox {
    /// Parses a mailbox; `field` names it in the error.
    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        let address = EmailAddress::parse(field, value.trim())?;
        Ok(Self(address.as_str().to_lowercase()))
    }

    /// A mailbox from the store, where it was saved already parsed.
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    /// The address, lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain, for logs and metric labels.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }

    /// Whether `account` (a user principal name or email claim) names this mailbox.
    pub fn is_owned_by(&self, account: &str) -> bool {
        self.0.eq_ignore_ascii_case(account.trim())
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mailbox(…@{})", self.domain())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_addresses_parse_and_keep_their_case() {
        let address = EmailAddress::parse("to[0].address", "Bob.Smith@Example.com").unwrap();
        assert_eq!(address.as_str(), "Bob.Smith@Example.com");
        assert_eq!(address.domain(), "example.com");
    }

    #[test]
    fn malformed_addresses_name_the_field_and_value() {
        let error = EmailAddress::parse("to[2].address", "bob@").unwrap_err();
        assert_eq!(
            error.to_string(),
            "to[2].address: \"bob@\" is not a valid email address"
        );
        for bad in [
            "bob",
            "@example.com",
            "Bob <bob@example.com>",
            "bob@example.com\r\nBcc: x@y.z",
            " bob@example.com",
        ] {
            assert!(
                EmailAddress::parse("to", bad).is_err(),
                "{bad:?} was accepted"
            );
        }
        assert_eq!(
            EmailAddress::parse("cc[0].address", "")
                .unwrap_err()
                .to_string(),
            "cc[0].address: is required"
        );
    }

    #[test]
    fn debug_output_hides_the_local_part() {
        let address = EmailAddress::parse("to", "secret.person@example.com").unwrap();
        assert!(!format!("{address:?}").contains("secret.person"));
        let mailbox = Mailbox::parse("mailbox", "NoReply@Contoso.com").unwrap();
        assert_eq!(mailbox.as_str(), "noreply@contoso.com");
        assert!(!format!("{mailbox:?}").contains("noreply"));
    }

    #[test]
    fn ownership_is_case_insensitive() {
        let mailbox = Mailbox::parse("mailbox", "noreply@contoso.com").unwrap();
        assert!(mailbox.is_owned_by("NoReply@contoso.COM"));
        assert!(!mailbox.is_owned_by("admin@contoso.com"));
    }
}
