//! Mailbox patterns: an exact address (`noreply@contoso.com`) or every address of a domain
//! (`*@billing.contoso.com`), compared case-insensitively. Callers' rights and
//! `GRAPH_MAILER_ALLOWED_MAILBOXES` are lists of them.

use std::fmt;

use super::{Mailbox, ValidationError};

/// One pattern.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum MailboxPattern {
    /// Exactly this mailbox.
    Exact(Mailbox),
    /// Any mailbox of this domain (lower case, without the `*@`).
    Domain(String),
}

impl MailboxPattern {
    /// Parses `noreply@contoso.com` or `*@contoso.com`; `field` names it in the error.
    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        let value = value.trim();
        match value.strip_prefix("*@") {
            Some(domain) => {
                // A domain is valid when an address on it is.
                Mailbox::parse(field, &format!("x@{domain}")).map_err(|_| {
                    ValidationError::new(field, format!("{value:?} is not *@ and a domain"))
                })?;
                Ok(Self::Domain(domain.to_ascii_lowercase()))
            }
            None if value.contains('*') => Err(ValidationError::new(
                field,
                format!("{value:?}: only a whole domain can be a wildcard, as *@contoso.com"),
            )),
            None => Mailbox::parse(field, value).map(Self::Exact),
        }
    }

    /// Whether `mailbox` matches.
    pub fn matches(&self, mailbox: &Mailbox) -> bool {
        match self {
            Self::Exact(exact) => exact == mailbox,
            Self::Domain(domain) => mailbox.domain() == domain,
        }
    }

    /// The mailbox, when this pattern names exactly one.
    pub fn exact(&self) -> Option<&Mailbox> {
        match self {
            Self::Exact(mailbox) => Some(mailbox),
            Self::Domain(_) => None,
        }
    }
}

impl fmt::Display for MailboxPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(mailbox) => write!(f, "{mailbox}"),
            Self::Domain(domain) => write!(f, "*@{domain}"),
        }
    }
}

impl fmt::Debug for MailboxPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(mailbox) => write!(f, "{mailbox:?}"),
            Self::Domain(domain) => write!(f, "*@{domain}"),
        }
    }
}

/// Whether any of `patterns` matches `mailbox`.
pub fn any_matches(patterns: &[MailboxPattern], mailbox: &Mailbox) -> bool {
    patterns.iter().any(|p| p.matches(mailbox))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(address: &str) -> Mailbox {
        Mailbox::parse("m", address).unwrap()
    }

    #[test]
    fn exact_addresses_and_whole_domains_match_case_insensitively() {
        let exact = MailboxPattern::parse("p", "NoReply@Contoso.com").unwrap();
        assert!(exact.matches(&mailbox("noreply@contoso.com")));
        assert!(!exact.matches(&mailbox("other@contoso.com")));
        let domain = MailboxPattern::parse("p", "*@Billing.Contoso.com").unwrap();
        assert!(domain.matches(&mailbox("any@billing.contoso.com")));
        assert!(!domain.matches(&mailbox("any@contoso.com")));
        assert!(!domain.matches(&mailbox("any@evilbilling.contoso.com")));
        assert_eq!(domain.to_string(), "*@billing.contoso.com");
    }

    #[test]
    fn partial_wildcards_and_non_addresses_are_refused() {
        for bad in [
            "*",
            "*@",
            "no*@contoso.com",
            "*.contoso.com",
            "contoso.com",
            "*@bad domain",
        ] {
            assert!(MailboxPattern::parse("mailboxes[0]", bad).is_err(), "{bad}");
        }
    }
}
