//! Admin sessions: a random id in an HttpOnly, SameSite=Lax cookie (Secure when the page is
//! served over https), kept server-side as a hash so any replica can serve it and a copy of the
//! store cannot be used to sign in. Each session's CSRF token is derived from the id, so it is
//! known only to the browser that holds the cookie and to pages rendered for it.

use axum::http::{HeaderMap, HeaderValue, header};
use chrono::{DateTime, Utc};

use crate::callers::key;

/// The session cookie.
pub const SESSION_COOKIE: &str = "gm_admin_session";
/// The cookie that ties a sign-in with Microsoft to the browser that started it.
pub const SIGN_IN_COOKIE: &str = "gm_admin_sign_in";

/// How an administrator got in. Checked again on every request, so taking someone off
/// `GRAPH_MAILER_ADMINS` (at a restart) or out of the callers file ends their sessions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Entry {
    Microsoft {
        object_id: Option<String>,
        account: Option<String>,
    },
    Key {
        caller: String,
    },
    /// The service runs without callers.
    Open,
}

/// A signed-in administrator.
#[derive(Debug, Clone)]
pub struct Session {
    pub id_hash: String,
    /// Who signed in, as the audit log names them.
    pub admin: String,
    pub entry: Entry,
    /// The token every state-changing form must carry.
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

impl Session {
    /// Whether the admin signed in with Microsoft as `mailbox`'s account (then they can use
    /// its sign-in link themselves).
    pub fn signed_in_as(&self, mailbox: &crate::domain::Mailbox) -> bool {
        matches!(&self.entry, Entry::Microsoft { account: Some(account), .. }
            if account.eq_ignore_ascii_case(mailbox.as_str()))
    }

    /// Whether a form's token is this session's (compared in constant time).
    pub fn accepts_csrf(&self, presented: Option<&str>) -> bool {
        let Some(presented) = presented else {
            return false;
        };
        // As callers' keys are compared: digests, in constant time.
        key::same_digest(&key::digest(presented), &key::digest(&self.csrf))
    }
}

/// What the store keeps of a browser-held secret.
pub fn hash(kind: &str, secret: &str) -> String {
    key::hex(&key::digest(&format!("{kind}|{secret}")))
}

/// The CSRF token of the session with this id.
pub fn csrf_token(session_id: &str) -> String {
    hash("csrf", session_id)
}

/// The value of the cookie `name`, when the request has it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, for the whole site, Secure over https.
/// `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age_seconds: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_seconds}{secure}"
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_found_among_others_and_an_empty_one_is_none() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; gm_admin_session=abc; b="),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "b"), None);
        assert_eq!(cookie(&headers, "gm_admin"), None);
    }

    #[test]
    fn only_the_sessions_own_csrf_token_is_accepted() {
        let session = Session {
            id_hash: hash("session", "id"),
            admin: "ops".into(),
            entry: Entry::Open,
            csrf: csrf_token("id"),
            expires_at: Utc::now(),
        };
        assert!(session.accepts_csrf(Some(&csrf_token("id"))));
        assert!(!session.accepts_csrf(Some(&csrf_token("other"))));
        assert!(!session.accepts_csrf(Some("")));
        assert!(!session.accepts_csrf(None));
    }

    #[test]
    fn cookies_are_http_only_lax_and_secure_over_https() {
        let cookie = set_cookie(SESSION_COOKIE, "v", 60, true);
        let text = cookie.to_str().unwrap();
        assert!(text.contains("HttpOnly") && text.contains("SameSite=Lax"));
        assert!(text.ends_with("; Secure"));
        assert!(
            !set_cookie(SESSION_COOKIE, "v", 60, false)
                .to_str()
                .unwrap()
                .contains("Secure")
        );
    }
}
