//! The Microsoft identity platform: sign-in links, the callback, tokens and the client secret.
//!
//! - [`client`]: the one HTTP client of the identity platform (authorize URL, token endpoint).
//! - [`connect`]: Connect from link to stored connection; `sign_in` verifies who signed in,
//!   with the [`directory`] (Graph's `/me`).
//! - [`token_manager`]: the refresh engine (one refresh: `refresh`); [`token_upkeep`] its
//!   background pass.
//! - [`secret`]: the client secret, rotatable without a restart, and its expiry.
//! - [`error`]: Microsoft's error bodies and what each code means.

pub(crate) mod client;
pub(crate) mod connect;
pub(crate) mod directory;
pub(crate) mod error;
pub(crate) mod id_token;
mod refresh;
pub(crate) mod secret;
mod sign_in;
mod token_cache;
pub(crate) mod token_manager;
pub(crate) mod token_response;
pub(crate) mod token_upkeep;

pub use client::{AuthorizationRequest, IdentityClient, TokenGrant, TokenRequestError};
pub use connect::{CallbackOutcome, CallbackParams, ConnectFlow, SignInLink, StartError};
pub use directory::{Directory, DirectoryError, DirectoryUser};
pub use error::{ErrorClass, MicrosoftError};
pub use id_token::IdTokenClaims;
pub use secret::{ClientSecretProvider, SecretExpiry};
pub use token_manager::{AccessToken, REFRESH_BACKOFF, TokenError, TokenManager};
pub use token_upkeep::UpkeepSummary;
