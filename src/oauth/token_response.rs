//! The token endpoint's success body, as Microsoft sends it.
//!
//! Differs from the `oauth2` crate's standard response in two ways that matter here: it keeps
//! the `id_token` (which names the account that signed in) and accepts `expires_in` as a number
//! or a string (some Azure endpoints send `"3599"`).

use std::time::Duration;

use oauth2::{
    AccessToken, RefreshToken, Scope, TokenResponse,
    basic::BasicTokenType,
    helpers::{
        deserialize_space_delimited_vec, deserialize_untagged_enum_case_insensitive,
        serialize_space_delimited_vec,
    },
};
use serde::{Deserialize, Deserializer, Serialize};

/// A successful token response.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MicrosoftTokenResponse {
    access_token: AccessToken,
    #[serde(deserialize_with = "deserialize_untagged_enum_case_insensitive")]
    token_type: BasicTokenType,
    #[serde(default, deserialize_with = "number_or_string")]
    expires_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<RefreshToken>,
    #[serde(
        default,
        rename = "scope",
        deserialize_with = "deserialize_space_delimited_vec",
        serialize_with = "serialize_space_delimited_vec",
        skip_serializing_if = "Option::is_none"
    )]
    scopes: Option<Vec<Scope>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

impl MicrosoftTokenResponse {
    /// The OpenID Connect id_token, when `openid` was requested.
    pub fn id_token(&self) -> Option<&str> {
        self.id_token.as_deref()
    }
}

impl TokenResponse for MicrosoftTokenResponse {
    type TokenType = BasicTokenType;

    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }
    fn token_type(&self) -> &BasicTokenType {
        &self.token_type
    }
    fn expires_in(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        self.scopes.as_ref()
    }
}

fn number_or_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(u64),
        String(String),
    }
    match Option::<NumberOrString>::deserialize(deserializer)? {
        None => Ok(None),
        Some(NumberOrString::Number(n)) => Ok(Some(n)),
        Some(NumberOrString::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("expires_in {s:?} is not a number"))),
    }
}

#[cfg(test)]
mod tests {
    use oauth2::TokenResponse;

    use super::*;

    #[test]
    fn expires_in_may_be_a_number_or_a_string() {
        for body in [
            r#"{"access_token":"a","token_type":"Bearer","expires_in":3599}"#,
            r#"{"access_token":"a","token_type":"bearer","expires_in":"3599"}"#,
        ] {
            let parsed: MicrosoftTokenResponse = serde_json::from_str(body).unwrap();
            assert_eq!(parsed.expires_in(), Some(Duration::from_secs(3599)));
        }
    }

    #[test]
    fn scopes_refresh_token_and_id_token_are_kept() {
        let body = r#"{"access_token":"a","token_type":"Bearer","expires_in":4000,"ext_expires_in":4000,
            "scope":"https://graph.microsoft.com/Mail.Send offline_access openid","refresh_token":"r","id_token":"h.p.s"}"#;
        let parsed: MicrosoftTokenResponse = serde_json::from_str(body).unwrap();
        assert_eq!(parsed.scopes().unwrap().len(), 3);
        assert_eq!(parsed.refresh_token().unwrap().secret(), "r");
        assert_eq!(parsed.id_token(), Some("h.p.s"));
    }
}
