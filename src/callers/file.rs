//! The callers file: TOML, one `[[caller]]` table per caller.
//!
//! ```toml
//! [[caller]]
//! name = "billing"                     # in logs, metrics and the audit log
//! key_sha256 = "<64 hex>"              # SHA-256 of the key; the key itself is never stored
//! role = "sender"                      # "sender" or "admin"
//! mailboxes = ["noreply@contoso.com", "*@billing.contoso.com"]
//! max_per_minute = 600                 # optional
//! client_cert = "spiffe://prod/ns/billing/sa/api"   # optional: a client certificate's SAN
//! ```
//!
//! Every problem is reported at once, naming the entry; a file with any problem is refused as
//! a whole (the previous one stays in force).

use std::{collections::HashSet, sync::Arc};

use serde::Deserialize;

use super::{Caller, Callers, Role, key};
use crate::domain::MailboxPattern;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallersFile {
    #[serde(default)]
    caller: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    key_sha256: Option<String>,
    role: String,
    #[serde(default)]
    mailboxes: Vec<String>,
    max_per_minute: Option<u32>,
    client_cert: Option<String>,
}

/// Parses and checks a callers file's text.
pub fn parse(text: &str) -> Result<Callers, String> {
    let file: CallersFile = toml::from_str(text).map_err(|e| format!("not valid TOML: {e}"))?;
    let mut problems = Vec::new();
    let mut callers = Vec::new();
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    let mut certs = HashSet::new();
    for (index, entry) in file.caller.into_iter().enumerate() {
        let at = format!("caller[{index}] ({})", entry.name);
        if !names.insert(entry.name.clone()) {
            problems.push(format!("{at}: the name is used twice"));
        }
        match check(entry, &at) {
            Ok(caller) => {
                if let Some(digest) = caller.key_sha256
                    && !keys.insert(digest)
                {
                    problems.push(format!("{at}: the key_sha256 is used twice"));
                }
                if let Some(cert) = &caller.client_cert
                    && !certs.insert(cert.clone())
                {
                    problems.push(format!("{at}: the client_cert is used twice"));
                }
                callers.push(Arc::new(caller));
            }
            Err(mut found) => problems.append(&mut found),
        }
    }
    if problems.is_empty() {
        Ok(Callers { list: callers })
    } else {
        Err(problems.join("; "))
    }
}

fn check(entry: Entry, at: &str) -> Result<Caller, Vec<String>> {
    let mut problems = Vec::new();
    let name_ok = !entry.name.is_empty()
        && entry.name.len() <= 64
        && entry
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !name_ok {
        problems.push(format!(
            "{at}: name must be 1 to 64 letters, digits, '-', '_' or '.'"
        ));
    }
    let role = match entry.role.as_str() {
        "sender" => Some(Role::Sender),
        "admin" => Some(Role::Admin),
        other => {
            problems.push(format!(
                "{at}: role is {other:?}; use \"sender\" or \"admin\""
            ));
            None
        }
    };
    let key_sha256 = match entry.key_sha256.as_deref().map(key::parse_hex) {
        Some(None) => {
            problems.push(format!(
                "{at}: key_sha256 must be the key's SHA-256 as 64 hex digits (graph-mailer new-key prints it)"
            ));
            None
        }
        Some(Some(digest)) => Some(digest),
        None => None,
    };
    let client_cert = entry
        .client_cert
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    if key_sha256.is_none() && client_cert.is_none() && entry.key_sha256.is_none() {
        problems.push(format!(
            "{at}: give key_sha256, client_cert or both, or nobody can be this caller"
        ));
    }
    let mut mailboxes = Vec::new();
    for (i, pattern) in entry.mailboxes.iter().enumerate() {
        match MailboxPattern::parse(&format!("{at}: mailboxes[{i}]"), pattern) {
            Ok(pattern) => mailboxes.push(pattern),
            Err(error) => problems.push(error.to_string()),
        }
    }
    if role == Some(Role::Sender) && entry.mailboxes.is_empty() {
        problems.push(format!(
            "{at}: a sender needs mailboxes = [...]: the addresses (or *@domain) it may send as"
        ));
    }
    if entry.max_per_minute == Some(0) {
        problems.push(format!(
            "{at}: max_per_minute must be at least 1 (or left out)"
        ));
    }
    match (role, problems.is_empty()) {
        (Some(role), true) => Ok(Caller {
            name: entry.name,
            role,
            mailboxes,
            max_per_minute: entry.max_per_minute,
            key_sha256,
            client_cert,
        }),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Mailbox;

    const HASH: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

    #[test]
    fn a_valid_file_gives_each_caller_its_role_and_mailboxes() {
        let callers = parse(&format!(
            r#"
            [[caller]]
            name = "billing"
            key_sha256 = "{HASH}"
            role = "sender"
            mailboxes = ["noreply@contoso.com", "*@billing.contoso.com"]
            max_per_minute = 600

            [[caller]]
            name = "ops"
            role = "admin"
            client_cert = "spiffe://prod/ns/ops/sa/console"
            "#
        ))
        .unwrap();
        let billing = callers.by_name("billing").unwrap();
        assert_eq!(billing.role, Role::Sender);
        assert!(billing.may_send_as(&Mailbox::parse("m", "x@billing.contoso.com").unwrap()));
        assert!(!billing.may_send_as(&Mailbox::parse("m", "ceo@contoso.com").unwrap()));
        assert_eq!(billing.max_per_minute, Some(600));
        assert_eq!(callers.by_name("ops").unwrap().role, Role::Admin);
    }

    #[test]
    fn every_problem_is_named_with_its_entry() {
        let error = parse(&format!(
            r#"
            [[caller]]
            name = "bad name"
            key_sha256 = "abc"
            role = "root"
            mailboxes = ["*.contoso.com"]

            [[caller]]
            name = "twice"
            key_sha256 = "{HASH}"
            role = "sender"

            [[caller]]
            name = "twice"
            key_sha256 = "{HASH}"
            role = "admin"
            "#
        ))
        .unwrap_err();
        for expected in [
            "caller[0] (bad name): name must be",
            "key_sha256 must be",
            "role is \"root\"",
            "mailboxes[0]",
            "caller[1] (twice): a sender needs mailboxes",
            "caller[2] (twice): the name is used twice",
        ] {
            assert!(error.contains(expected), "{expected} not in {error}");
        }
        assert!(parse("[[caller]]\nname = 1").is_err());
        assert!(parse("[[caller]]\nname = \"x\"\nrole = \"admin\"\nkey = \"oops\"").is_err());
    }
}
