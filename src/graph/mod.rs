//! Microsoft Graph: the client, the payloads it sends and its error table.

pub mod client;
pub mod error;
pub mod payload;

pub use client::{GraphCallError, GraphClient, is_retryable, parse_retry_after};
pub use error::{GraphError, GraphErrorBody, GraphFailure, map_failure};
pub use payload::{Payload, Plan};
