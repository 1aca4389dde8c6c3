//! The refresh engine's background pass: tokens expiring soon and connections idle for days
//! are refreshed before anyone needs them, so Microsoft's 90-day inactivity expiry never hits a
//! quiet mailbox.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::token_manager::{Need, TokenManager};

/// What a background pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UpkeepSummary {
    pub refreshed: usize,
    pub failed: usize,
}

impl TokenManager {
    /// Refreshes what is due: tokens expiring soon and connections idle for too long.
    pub async fn upkeep(&self) -> UpkeepSummary {
        let mut summary = UpkeepSummary::default();
        let mailboxes = match self.store.connected_mailboxes().await {
            Ok(mailboxes) => mailboxes,
            Err(error) => {
                tracing::error!(
                    error = crate::telemetry::redact_addresses(&error.to_string()),
                    "token upkeep cannot list mailboxes"
                );
                return summary;
            }
        };
        for mailbox in mailboxes {
            let generation_before = match self.store.tokens(&mailbox).await {
                Ok(Some(tokens)) if self.needs_refresh(&tokens, Need::Upkeep) => tokens.generation,
                _ => continue,
            };
            match self.refresh(&mailbox, Need::Upkeep).await {
                Ok(token) if token.generation != generation_before => summary.refreshed += 1,
                Ok(_) => {}
                Err(error) => {
                    summary.failed += 1;
                    tracing::warn!(
                        mailbox_domain = mailbox.domain(),
                        error = crate::telemetry::redact_addresses(&error.to_string()),
                        "background refresh failed"
                    );
                }
            }
        }
        summary
    }

    /// Runs [`TokenManager::upkeep`] every check interval until `shutdown`.
    pub fn spawn_upkeep(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        crate::periodic::spawn_every(self.settings.check_interval, shutdown, move || {
            let tokens = self.clone();
            async move {
                tokens.upkeep().await;
            }
        })
    }
}
