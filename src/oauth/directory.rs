//! Who an access token belongs to, as Microsoft Graph's `/me` tells it: the object id, the
//! user principal name, the primary SMTP address and the aliases.
//!
//! The id_token's `preferred_username` and `email` are mutable and "can't be used to make
//! authorization decisions" (ID token claims reference); in real tenants the UPN often differs
//! from the primary address and mailboxes have aliases. The sign-in is therefore checked
//! against the directory. The trait keeps the identity side free of the Graph client, which
//! implements it.

use secrecy::SecretString;

/// A user of the tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryUser {
    /// The object id (stable; the id_token's `oid`).
    pub object_id: String,
    pub user_principal_name: String,
    /// The primary SMTP address, when the user has a mailbox.
    pub mail: Option<String>,
    /// `SMTP:` the primary address, `smtp:` aliases, and other kinds (`SIP:`, `X500:`).
    pub proxy_addresses: Vec<String>,
}

impl DirectoryUser {
    /// Every address the user receives mail at: the primary and the `smtp:` aliases, lower case.
    pub fn smtp_addresses(&self) -> Vec<String> {
        let mut addresses: Vec<String> = self.mail.iter().map(|m| m.to_lowercase()).collect();
        for proxy in &self.proxy_addresses {
            if let Some((kind, address)) = proxy.split_once(':')
                && kind.eq_ignore_ascii_case("smtp")
            {
                addresses.push(address.to_lowercase());
            }
        }
        addresses
    }

    /// Whether `address` names this user: the UPN, the primary address or an alias.
    pub fn answers_to(&self, address: &str) -> bool {
        let address = address.trim().to_lowercase();
        self.user_principal_name.to_lowercase() == address
            || self.smtp_addresses().contains(&address)
    }

    /// The address mail goes out from: the primary SMTP address (`mail`, else the `SMTP:`
    /// proxy address), else the UPN.
    pub fn sending_address(&self) -> String {
        self.mail
            .clone()
            .or_else(|| {
                self.proxy_addresses
                    .iter()
                    .find_map(|p| p.strip_prefix("SMTP:").map(str::to_owned))
            })
            .unwrap_or_else(|| self.user_principal_name.clone())
            .to_lowercase()
    }
}

/// Why the directory could not say who signed in.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DirectoryError {
    /// The token may not read the profile: `User.Read` is not granted.
    #[error("Microsoft Graph refused to read the signed-in user (403): User.Read is not granted")]
    NotPermitted,
    /// Anything else: unreachable, an error answer, an unreadable answer.
    #[error("Microsoft Graph could not tell who signed in: {0}")]
    Failed(String),
}

/// Reads the signed-in user of an access token.
#[async_trait::async_trait]
pub trait Directory: Send + Sync + std::fmt::Debug {
    async fn signed_in_user(
        &self,
        access_token: &SecretString,
    ) -> Result<DirectoryUser, DirectoryError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jane() -> DirectoryUser {
        DirectoryUser {
            object_id: "o".into(),
            user_principal_name: "Jane.Doe@contoso.onmicrosoft.com".into(),
            mail: Some("Jane@contoso.com".into()),
            proxy_addresses: vec![
                "SMTP:Jane@contoso.com".into(),
                "smtp:j.doe@contoso.com".into(),
                "SIP:jane@contoso.com".into(),
            ],
        }
    }

    #[test]
    fn a_user_answers_to_the_upn_the_primary_address_and_aliases_only() {
        let jane = jane();
        for name in [
            "jane.doe@contoso.onmicrosoft.com",
            "JANE@contoso.com",
            "j.doe@contoso.com",
        ] {
            assert!(jane.answers_to(name), "{name}");
        }
        assert!(!jane.answers_to("someone@contoso.com"));
        assert_eq!(jane.sending_address(), "jane@contoso.com");
    }

    #[test]
    fn without_mail_the_primary_proxy_address_then_the_upn_send() {
        let mut user = jane();
        user.mail = None;
        assert_eq!(user.sending_address(), "jane@contoso.com");
        user.proxy_addresses.clear();
        assert_eq!(user.sending_address(), "jane.doe@contoso.onmicrosoft.com");
    }
}
