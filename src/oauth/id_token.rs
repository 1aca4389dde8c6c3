//! The claims of the id_token that names the account that signed in.
//!
//! The token comes straight from the token endpoint over TLS, so its signature need not be
//! checked (OpenID Connect Core 3.1.3.7); its audience and tenant still must match.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Deserialize;

use super::{IdentityClient, TokenGrant};

/// Why an id_token does not prove a sign-in at this app's tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginProblem {
    /// Missing or not a JWT with readable claims.
    Unreadable(String),
    /// Issued to another application.
    Audience,
    /// An account of another tenant.
    Tenant,
    /// Issued by another authority (cloud).
    Issuer { found: String, expected: String },
}

impl std::fmt::Display for OriginProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreadable(reason) => write!(f, "{reason}"),
            Self::Audience => write!(
                f,
                "the sign-in was issued to another application (check {})",
                crate::variables::CLIENT_ID
            ),
            Self::Tenant => write!(f, "the account belongs to another Microsoft 365 tenant"),
            Self::Issuer { found, expected } => write!(
                f,
                "the sign-in was issued by {found}, expected {expected} (check {})",
                crate::variables::AUTHORITY_URL
            ),
        }
    }
}

/// The grant's id_token claims, once they prove the token was issued to this app (`aud`) by
/// this tenant's issuer (`iss` = `{authority}/{tid}/v2.0`) for the configured tenant (`tid`).
pub fn verify_origin(
    identity: &IdentityClient,
    grant: &TokenGrant,
) -> Result<IdTokenClaims, OriginProblem> {
    let claims = grant
        .id_token
        .as_deref()
        .ok_or_else(|| "Microsoft returned no id_token".to_owned())
        .and_then(IdTokenClaims::decode)
        .map_err(|reason| {
            tracing::error!(reason, "id_token unusable");
            OriginProblem::Unreadable(reason)
        })?;
    if claims.aud != identity.client_id().as_str() {
        tracing::error!("id_token audience is not this app; refused");
        return Err(OriginProblem::Audience);
    }
    let tenant = identity.tenant();
    let tid = claims.tid.as_deref().unwrap_or_default();
    let tenant_matches =
        !tid.is_empty() && (!tenant.is_guid() || tid.eq_ignore_ascii_case(tenant.as_str()));
    if !tenant_matches {
        tracing::error!("id_token tenant is not the configured tenant; refused");
        return Err(OriginProblem::Tenant);
    }
    let expected = identity.issuer_for(tid);
    if claims.iss.as_deref() != Some(expected.as_str()) {
        let found = claims.iss.clone().unwrap_or_else(|| "missing".to_owned());
        tracing::error!(
            issuer = found,
            "id_token issuer is not the configured authority; refused"
        );
        return Err(OriginProblem::Issuer { found, expected });
    }
    Ok(claims)
}

/// The claims graph-mailer reads.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct IdTokenClaims {
    /// The client ID the token was issued to.
    pub aud: String,
    /// Who issued it: `{authority}/{tenant GUID}/v2.0`.
    #[serde(default)]
    pub iss: Option<String>,
    /// The tenant (directory) GUID.
    #[serde(default)]
    pub tid: Option<String>,
    /// The account's object ID.
    #[serde(default)]
    pub oid: Option<String>,
    /// The sign-in name, normally the user principal name.
    #[serde(default)]
    pub preferred_username: Option<String>,
    /// The account's email address, with the `email` scope.
    #[serde(default)]
    pub email: Option<String>,
    /// The value the sign-in request carried, echoed back (OpenID Connect's replay guard).
    #[serde(default)]
    pub nonce: Option<String>,
}

impl IdTokenClaims {
    /// Decodes the payload of a compact JWT.
    pub fn decode(id_token: &str) -> Result<Self, String> {
        let payload = id_token
            .split('.')
            .nth(1)
            .ok_or_else(|| "the id_token is not a JWT".to_owned())?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| "the id_token's payload is not base64url".to_owned())?;
        serde_json::from_slice(&bytes)
            .map_err(|e| format!("the id_token's claims are unreadable: {e}"))
    }

    /// The account name to show: preferred_username, else email.
    pub fn account(&self) -> Option<&str> {
        self.preferred_username.as_deref().or(self.email.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_read_from_the_payload() {
        let payload = URL_SAFE_NO_PAD.encode(
            r#"{"aud":"client","tid":"tenant","oid":"o","preferred_username":"NoReply@contoso.com"}"#,
        );
        let claims = IdTokenClaims::decode(&format!("eyJhbGciOiJub25lIn0.{payload}.")).unwrap();
        assert_eq!(claims.aud, "client");
        assert_eq!(claims.account(), Some("NoReply@contoso.com"));
        assert!(IdTokenClaims::decode("garbage").is_err());
    }
}
