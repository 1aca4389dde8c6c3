//! What the outbox asks of the post office: whether a mailbox may have messages queued, and
//! delivering one queued message (pauses, the transport, counters) without SendMail's
//! idempotency, which the outbox does itself.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{Error, PostOffice};
use crate::{
    callers::Caller,
    domain::{Mailbox, OutgoingMessage},
    oauth::TokenError,
    store::ConnectionState,
    transport::SendError,
};

/// How long "this mailbox is connected" is believed without asking the store again.
const CONNECTED_FOR: Duration = Duration::from_secs(1);

impl PostOffice {
    /// The mailbox a queued message goes out as, when the caller may send as it and it is
    /// connected (or waiting for its owner to reconnect: its queue is held meanwhile).
    pub async fn queueable_sender(
        &self,
        caller: &Caller,
        mailbox: Option<&Mailbox>,
    ) -> Result<Mailbox, Error> {
        let mailbox = self.resolve_sender(caller, mailbox).await?;
        if !self.parts.transport.needs_connected_mailboxes() || self.recently_connected(&mailbox) {
            return Ok(mailbox);
        }
        match self.parts.store.connection_state(&mailbox).await? {
            Some(ConnectionState::Connected | ConnectionState::ReauthorizationRequired) => {
                self.connected
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(mailbox.clone(), Instant::now());
                Ok(mailbox)
            }
            _ => Err(Error::Delivery(SendError::Token(
                TokenError::NotConnected { mailbox },
            ))),
        }
    }

    fn recently_connected(&self, mailbox: &Mailbox) -> bool {
        self.connected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(mailbox)
            .is_some_and(|at| at.elapsed() < CONNECTED_FOR)
    }

    /// Sends one queued message: refused while Exchange has the mailbox paused, counted in
    /// Status either way.
    pub async fn deliver_queued(
        &self,
        mailbox: &Mailbox,
        message: &OutgoingMessage,
        message_id: &str,
    ) -> Result<DateTime<Utc>, SendError> {
        if let Some(paused) = self.pauses.refusal(mailbox, self.parts.clock.now()) {
            return Err(paused);
        }
        let result = self
            .parts
            .transport
            .send(mailbox, message, message_id)
            .await;
        match &result {
            Ok(at) => self.tallies.add(
                mailbox,
                Ok(crate::clock::from_millis(at.timestamp_millis())),
            ),
            Err(error) => {
                self.pauses
                    .note(&self.parts.store, error, self.parts.clock.now())
                    .await;
                self.tallies.add(mailbox, Err(error.to_string()));
            }
        }
        result
    }

    /// Whether a message reached the mailbox's Sent Items (`None`: cannot tell).
    pub async fn find_sent(
        &self,
        mailbox: &Mailbox,
        message_id: &str,
    ) -> Result<Option<bool>, SendError> {
        self.parts.transport.find_sent(mailbox, message_id).await
    }
}
