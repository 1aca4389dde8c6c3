//! The Microsoft identity platform: sign-in links, the callback, tokens and the client secret.
//!
//! - [`client`]: the one HTTP client of the identity platform (authorize URL, token endpoint).
//! - [`connect`]: Connect from link to stored connection, with the sign-in verified.
//! - [`token_manager`]: the refresh engine.
//! - [`secret`]: the client secret, rotatable without a restart.
//! - [`error`]: Microsoft's error bodies and what each code means.

pub mod client;
pub mod connect;
pub mod error;
pub mod id_token;
pub mod secret;
pub mod token_manager;
pub mod token_response;

pub use client::{AuthorizationRequest, IdentityClient, TokenGrant, TokenRequestError};
pub use connect::{CallbackOutcome, CallbackParams, ConnectFlow, SignInLink, StartError};
pub use error::{ErrorClass, MicrosoftError};
pub use id_token::IdTokenClaims;
pub use secret::ClientSecretProvider;
pub use token_manager::{AccessToken, RefreshRetry, TokenError, TokenManager, UpkeepSummary};

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
