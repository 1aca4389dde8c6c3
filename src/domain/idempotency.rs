//! Caller-chosen idempotency keys.

use super::ValidationError;

/// The longest key accepted, in characters.
pub const MAX_KEY_CHARS: usize = 255;

/// A key under which a send happens at most once per mailbox within 24 hours.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses `idempotency_key`; an empty value means "no key".
    pub fn parse(value: &str) -> Result<Option<Self>, ValidationError> {
        if value.is_empty() {
            return Ok(None);
        }
        if value.chars().count() > MAX_KEY_CHARS {
            return Err(ValidationError::new(
                "idempotency_key",
                format!("is longer than {MAX_KEY_CHARS} characters"),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "idempotency_key",
                "must not contain control characters",
            ));
        }
        Ok(Some(Self(value.to_owned())))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_no_key_and_long_keys_are_refused() {
        assert_eq!(IdempotencyKey::parse("").unwrap(), None);
        assert!(IdempotencyKey::parse(&"k".repeat(255)).unwrap().is_some());
        let error = IdempotencyKey::parse(&"k".repeat(256)).unwrap_err();
        assert_eq!(error.field, "idempotency_key");
        assert!(IdempotencyKey::parse("a\nb").is_err());
    }
}
