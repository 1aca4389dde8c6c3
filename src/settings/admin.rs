//! The admin page's settings: whether it is served, who may sign in, and for how long.

use std::time::Duration;

use super::{RawSettings, azure::is_guid, validate::Problems};
use crate::{domain::Mailbox, variables};

/// One entry of `GRAPH_MAILER_ADMINS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminId {
    /// Compared with the sign-in name (user principal name) of an account of the tenant.
    Account(Mailbox),
    /// Compared with the account's object id, the identity that never changes.
    ObjectId(String),
}

impl AdminId {
    fn parse(value: &str) -> Result<Self, String> {
        if is_guid(value) {
            return Ok(Self::ObjectId(value.to_ascii_lowercase()));
        }
        Mailbox::parse(variables::ADMINS, value)
            .map(Self::Account)
            .map_err(|_| {
                format!(
                    "{} lists \"{value}\", neither an account's address nor an object id (GUID)",
                    variables::ADMINS
                )
            })
    }

    /// Whether the account that signed in is this admin.
    pub fn matches(&self, object_id: Option<&str>, account: Option<&str>) -> bool {
        match self {
            Self::ObjectId(id) => object_id.is_some_and(|oid| oid.eq_ignore_ascii_case(id)),
            Self::Account(address) => {
                account.is_some_and(|name| name.eq_ignore_ascii_case(address.as_str()))
            }
        }
    }
}

/// The admin page.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Whether `/admin` is served.
    pub enabled: bool,
    /// Who may sign in with Microsoft.
    pub admins: Vec<AdminId>,
    /// Whether an admin caller's key signs in too (always so in the sandbox).
    pub key_sign_in: bool,
    /// How long a session lasts from sign-in.
    pub session_lifetime: Duration,
}

impl AdminSettings {
    pub(super) fn from_raw(
        raw: &RawSettings,
        graph: bool,
        problems: &mut Problems,
    ) -> Option<Self> {
        let admins = raw
            .admins
            .as_deref()
            .unwrap_or_default()
            .split([',', ' '])
            .filter(|entry| !entry.trim().is_empty())
            .map(|entry| AdminId::parse(entry.trim()))
            .collect::<Result<Vec<_>, String>>();
        if raw.admin_session_minutes == 0 {
            problems.error(format!(
                "{} is 0: give the minutes a sign-in to the admin page lasts (480 is a working day)",
                variables::ADMIN_SESSION_MINUTES
            ));
        }
        let admins = problems.take(admins)?;
        let key_sign_in = raw.admin_key_sign_in || !graph;
        Some(Self {
            enabled: raw.admin_page,
            admins,
            key_sign_in,
            session_lifetime: Duration::from_secs(raw.admin_session_minutes.max(1) * 60),
        })
    }

    /// Whether the account that signed in with Microsoft is an admin.
    pub fn admits(&self, object_id: Option<&str>, account: Option<&str>) -> bool {
        self.admins
            .iter()
            .any(|admin| admin.matches(object_id, account))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admins_are_addresses_or_object_ids_and_nothing_else() {
        let id = AdminId::parse("6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap();
        assert!(id.matches(Some("6f9619ff-8b86-d011-b42d-00c04fc964ff"), None));
        assert!(!id.matches(None, Some("6f9619ff-8b86-d011-b42d-00c04fc964ff")));
        let account = AdminId::parse("Ops@Contoso.com").unwrap();
        assert!(account.matches(None, Some("ops@contoso.com")));
        assert!(!account.matches(Some("x"), Some("ops@contoso.com.evil")));
        let error = AdminId::parse("ops").unwrap_err();
        assert!(error.contains("GRAPH_MAILER_ADMINS"), "{error}");
    }
}
