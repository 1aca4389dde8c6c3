//! Where a validated message goes.
//!
//! - [`sandbox`]: writes `.eml` files; nothing leaves the machine.
//! - [`graph`]: Microsoft Graph with tokens from the refresh engine, the wire form chosen per
//!   message, retries within a budget and Outlook's per-mailbox concurrency limit.

pub mod graph;
pub mod sandbox;

use chrono::{DateTime, Utc};

pub use graph::GraphTransport;
pub use sandbox::SandboxTransport;

use crate::{
    domain::{Mailbox, OutgoingMessage},
    mailer::MailerError,
    settings::TransportKind,
};

/// The configured transport.
#[derive(Debug)]
pub enum Transport {
    Sandbox(SandboxTransport),
    Graph(Box<GraphTransport>),
}

impl Transport {
    /// Which transport this is.
    pub fn kind(&self) -> TransportKind {
        match self {
            Self::Sandbox(_) => TransportKind::Sandbox,
            Self::Graph(_) => TransportKind::Graph,
        }
    }

    /// Forgets anything held in memory for `mailbox` (its cached token) after Disconnect.
    pub fn forget(&self, mailbox: &Mailbox) {
        if let Self::Graph(graph) = self {
            graph.forget(mailbox);
        }
    }

    /// Sends `message` as `mailbox`; returns when it was accepted.
    pub async fn send(
        &self,
        mailbox: &Mailbox,
        message: &OutgoingMessage,
        message_id: &str,
    ) -> Result<DateTime<Utc>, MailerError> {
        match self {
            Self::Sandbox(sandbox) => sandbox.send(mailbox, message, message_id).await,
            Self::Graph(graph) => graph.send(mailbox, message, message_id).await,
        }
    }
}
