//! The Microsoft identity platform: sign-in links, the callback, tokens and the client secret.
//!
//! - [`client`]: the one HTTP client of the identity platform (authorize URL, token endpoint).
//! - [`connect`]: Connect from link to stored connection; `sign_in` verifies who signed in.
//! - [`token_manager`]: the refresh engine; [`token_upkeep`] its background pass.
//! - [`secret`]: the client secret, rotatable without a restart, and its expiry.
//! - [`error`]: Microsoft's error bodies and what each code means.

pub(crate) mod client;
pub(crate) mod connect;
pub(crate) mod error;
pub(crate) mod id_token;
pub(crate) mod secret;
mod sign_in;
mod token_cache;
pub(crate) mod token_manager;
pub(crate) mod token_response;
pub(crate) mod token_upkeep;

pub use client::{AuthorizationRequest, IdentityClient, TokenGrant, TokenRequestError};
pub use connect::{CallbackOutcome, CallbackParams, ConnectFlow, SignInLink, StartError};
pub use error::{ErrorClass, MicrosoftError};
pub use id_token::IdTokenClaims;
pub use secret::{ClientSecretProvider, SecretExpiry};
pub use token_manager::{AccessToken, REFRESH_BACKOFF, TokenError, TokenManager};
pub use token_upkeep::UpkeepSummary;

use crate::settings::azure::GRAPH_RESOURCE;

/// Granted scopes as short names: `https://graph.microsoft.com/Mail.Send` becomes `Mail.Send`.
pub fn normalize_scopes(scopes: &[String]) -> Vec<String> {
    let mut normalized: Vec<String> = Vec::new();
    for scope in scopes.iter().flat_map(|s| s.split_whitespace()) {
        let short = scope.strip_prefix(GRAPH_RESOURCE).unwrap_or(scope);
        if !normalized.iter().any(|s| s.eq_ignore_ascii_case(short)) {
            normalized.push(short.to_owned());
        }
    }
    normalized
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_normalized_to_short_names_once_each() {
        let scopes = normalize_scopes(&[
            "https://graph.microsoft.com/Mail.Send openid".into(),
            "Mail.Send".into(),
            "offline_access".into(),
        ]);
        assert_eq!(scopes, ["Mail.Send", "openid", "offline_access"]);
    }
}
