//! Microsoft Graph: the HTTP client, the payloads it sends, its error table, and the transport
//! that delivers mail through it.
//!
//! - [`client`]: the one place that builds Graph URLs; `lookups` reads `/me` and Sent Items.
//! - [`payload`]: the wire form chosen per message; `json` holds Graph's spellings.
//! - [`error`]: Graph's error bodies and what each code means for a send.
//! - [`transport`]: [`GraphTransport`]: plans, drafts, attachments, and looking in Sent Items
//!   after an ambiguous answer.
//! - `policy`: one call's retries, the 401 refresh, and what a failure means.
//! - [`limiter`]: Outlook's four concurrent requests per mailbox, across replicas.

pub(crate) mod client;
mod directory;
pub(crate) mod error;
mod json;
pub mod limiter;
mod lookups;
pub mod payload;
mod policy;
pub(crate) mod transport;

pub use client::{GraphCallError, GraphClient, is_retryable, parse_retry_after};
pub use error::{GraphError, GraphErrorBody, GraphFailure};
pub use limiter::MailboxLimiter;
pub use lookups::SignedInUser;
pub use payload::{Payload, Plan};
pub use transport::GraphTransport;
