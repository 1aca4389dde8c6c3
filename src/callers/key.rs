//! Caller keys: 256 random bits with a recognisable `gm_` prefix. The service stores and
//! compares only their SHA-256; `graph-mailer new-key` prints a key once with the entry to paste
//! into the callers file.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// What every key starts with, so one is recognised in a leaked file or a secret scanner.
pub const KEY_PREFIX: &str = "gm_";

/// A fresh key: `gm_` and 32 random bytes, base64url.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The SHA-256 of a key, as stored in the callers file.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The digest as 64 lower-case hex digits.
pub fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits.
pub fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Compares two digests in time that does not depend on where they differ.
pub fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What `graph-mailer new-key` prints: the key, once, and the callers-file entry that admits it.
pub fn new_key_text(name: &str, role: &str, mailboxes: &[String]) -> (String, String) {
    let key = generate();
    let mut entry = format!(
        "[[caller]]\nname = {}\nkey_sha256 = \"{}\"\nrole = {}\n",
        toml_string(name),
        hex(&digest(&key)),
        toml_string(role)
    );
    if !mailboxes.is_empty() {
        let list: Vec<String> = mailboxes.iter().map(|m| toml_string(m)).collect();
        entry.push_str(&format!("mailboxes = [{}]\n", list.join(", ")));
    }
    (key, entry)
}

fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_256_random_bits_behind_the_prefix() {
        let (a, b) = (generate(), generate());
        assert!(a.starts_with("gm_") && b.starts_with("gm_"));
        assert_ne!(a, b);
        let raw = URL_SAFE_NO_PAD.decode(&a[3..]).unwrap();
        assert_eq!(raw.len(), 32);
    }

    #[test]
    fn digests_round_trip_through_hex_and_compare() {
        let d = digest("gm_example");
        assert_eq!(parse_hex(&hex(&d)), Some(d));
        assert!(same_digest(&d, &d));
        assert!(!same_digest(&d, &digest("gm_other")));
        assert_eq!(parse_hex("abc"), None);
        assert_eq!(parse_hex(&"zz".repeat(32)), None);
    }

    #[test]
    fn the_printed_entry_admits_the_printed_key() {
        let (key, entry) = new_key_text("billing", "sender", &["noreply@contoso.com".into()]);
        assert!(entry.contains(&hex(&digest(&key))));
        assert!(!entry.contains(&key));
        assert!(entry.contains("mailboxes = [\"noreply@contoso.com\"]"));
    }
}
