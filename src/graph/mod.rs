//! Microsoft Graph: the HTTP client, the payloads it sends, its error table, and the transport
//! that delivers mail through it.
//!
//! - [`client`]: the one place that builds Graph URLs.
//! - [`payload`]: the wire form chosen per message; `json` holds Graph's spellings.
//! - [`error`]: Graph's error bodies and what each code means for a send.
//! - [`transport`]: [`GraphTransport`], the retry policy, the 401 refresh and uploads.
//! - `limiter`: Outlook's four concurrent requests per mailbox.

pub(crate) mod client;
pub(crate) mod error;
mod json;
mod limiter;
pub mod payload;
pub(crate) mod transport;

pub use client::{GraphCallError, GraphClient, is_retryable, parse_retry_after};
pub use error::{GraphError, GraphErrorBody, GraphFailure};
pub use payload::{Payload, Plan};
pub use transport::GraphTransport;
