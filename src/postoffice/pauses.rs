//! Mailboxes Exchange has stopped sending (`ErrorExceededMessageLimit`,
//! `ErrorMessageSubmissionBlocked`): their sends are refused here, without a request to
//! Microsoft, until the pause ends.
//!
//! Each replica holds its own pauses in memory (a replica learns of a block from its own first
//! refused send); the store keeps the latest pause for Status.

use std::{collections::HashMap, sync::Mutex};

use chrono::{DateTime, Utc};

use crate::{domain::Mailbox, store::Store, transport::SendError};

/// Why and until when a mailbox is paused.
#[derive(Debug, Clone)]
struct Pause {
    until: DateTime<Utc>,
    code: String,
    message: String,
}

/// The paused mailboxes.
#[derive(Debug, Default)]
pub struct Pauses {
    paused: Mutex<HashMap<Mailbox, Pause>>,
}

impl Pauses {
    /// The refusal for a send of `mailbox` while it is paused.
    pub fn refusal(&self, mailbox: &Mailbox, now: DateTime<Utc>) -> Option<SendError> {
        let mut paused = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        match paused.get(mailbox) {
            Some(pause) if pause.until > now => Some(SendError::SendingBlocked {
                mailbox: mailbox.clone(),
                code: pause.code.clone(),
                message: pause.message.clone(),
                paused_until: pause.until,
            }),
            Some(_) => {
                paused.remove(mailbox);
                None
            }
            None => None,
        }
    }

    /// Pauses the mailbox when `error` says Exchange stopped it, and records why for Status.
    pub async fn note(&self, store: &Store, error: &SendError, now: DateTime<Utc>) {
        let SendError::SendingBlocked {
            mailbox,
            code,
            message,
            paused_until,
        } = error
        else {
            return;
        };
        self.paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                mailbox.clone(),
                Pause {
                    until: *paused_until,
                    code: code.clone(),
                    message: message.clone(),
                },
            );
        tracing::warn!(
            mailbox_domain = mailbox.domain(),
            code,
            until = %paused_until,
            "Exchange stopped the mailbox sending; its sends are paused"
        );
        let reason = format!("{code}: {message}");
        if let Err(error) = store
            .pause_sending(mailbox, *paused_until, &reason, now)
            .await
        {
            tracing::error!(
                error = crate::telemetry::redact_addresses(&error.to_string()),
                "cannot record the pause"
            );
        }
    }
}
