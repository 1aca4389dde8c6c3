//! The outbox's reads and cancels: GetMessage, ListMessages, CancelMessage, GetBatch and
//! CancelBatch, with the caller's rights.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use super::{
    Outbox,
    api::{BatchView, ListPage, message_state, visible},
};
use crate::{
    callers::Caller,
    domain::{Mailbox, ValidationError},
    postoffice::Error,
    proto, requests,
    store::{MessageFilter, MessageRecord},
};

/// ListMessages' default and largest page.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

impl Outbox {
    /// GetMessage.
    pub async fn message(&self, caller: &Caller, id: &str) -> Result<MessageRecord, Error> {
        let record =
            self.parts
                .store
                .queued_message(id)
                .await?
                .ok_or_else(|| Error::UnknownMessage {
                    message_id: id.to_owned(),
                })?;
        visible(caller, &record.mailbox, "see message", id)?;
        Ok(record)
    }

    /// ListMessages: newest first, `page_size` at a time.
    pub async fn list(
        &self,
        caller: &Caller,
        request: proto::ListMessagesRequest,
    ) -> Result<ListPage, Error> {
        let mailbox = requests::optional_mailbox(&request.mailbox)?;
        if let Some(mailbox) = &mailbox {
            visible(caller, mailbox, "list the messages of", mailbox.as_str())?;
        }
        let state = message_state(request.state, "state")?;
        let filter = MessageFilter {
            allowed: (!caller.is_admin()).then(|| caller.mailboxes.clone()),
            mailbox,
            state,
            batch_id: (!request.batch_id.is_empty()).then_some(request.batch_id),
        };
        let after = decode_page_token(&request.page_token)?;
        let size = match request.page_size {
            0 => DEFAULT_PAGE,
            size => size.min(MAX_PAGE),
        };
        let mut messages = self
            .parts
            .store
            .queued_messages(&filter, after, size + 1)
            .await?;
        messages.retain(|m| caller.may_send_as(&m.mailbox));
        let next_page_token = (messages.len() > size as usize).then(|| {
            messages.truncate(size as usize);
            let last = &messages[messages.len() - 1];
            URL_SAFE_NO_PAD.encode(format!(
                "{}:{}",
                last.accepted_at.timestamp_millis(),
                last.message_id
            ))
        });
        Ok(ListPage {
            messages,
            next_page_token,
        })
    }

    /// CancelMessage: only while QUEUED.
    pub async fn cancel(&self, caller: &Caller, id: &str) -> Result<MessageRecord, Error> {
        self.message(caller, id).await?;
        let (record, cancelled) = self
            .parts
            .store
            .cancel_message(id, self.parts.clock.now())
            .await?
            .ok_or_else(|| Error::UnknownMessage {
                message_id: id.to_owned(),
            })?;
        if !cancelled {
            return Err(Error::NotQueued {
                message_id: id.to_owned(),
                state: record.state.as_str().to_uppercase(),
            });
        }
        self.activity.changed();
        Ok(record)
    }

    /// GetBatch.
    pub async fn batch(&self, caller: &Caller, id: &str) -> Result<BatchView, Error> {
        let record = self
            .parts
            .store
            .batch(id)
            .await?
            .ok_or_else(|| Error::UnknownBatch {
                batch_id: id.to_owned(),
            })?;
        let mailbox = record
            .mailbox
            .clone()
            .unwrap_or_else(|| Mailbox::from_stored(String::new()));
        visible(caller, &mailbox, "see batch", id)?;
        let estimated_done_at = if record.queued > 0 {
            let ahead = self
                .parts
                .store
                .queued_count(&mailbox)
                .await?
                .saturating_sub(1);
            Some(
                self.parts
                    .store
                    .estimate_send_at(
                        &mailbox,
                        ahead,
                        &self.parts.settings.limits,
                        self.parts.clock.now(),
                    )
                    .await?,
            )
        } else {
            None
        };
        Ok(BatchView {
            record,
            estimated_done_at,
        })
    }

    /// CancelBatch: cancels what is still QUEUED.
    pub async fn cancel_batch(&self, caller: &Caller, id: &str) -> Result<BatchView, Error> {
        self.batch(caller, id).await?;
        self.parts
            .store
            .cancel_batch(id, self.parts.clock.now())
            .await?;
        self.activity.changed();
        self.batch(caller, id).await
    }
}

fn decode_page_token(token: &str) -> Result<Option<(i64, String)>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || ValidationError::new("page_token", "is not a token ListMessages returned");
    let text = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(invalid)?;
    let (at, id) = text.split_once(':').ok_or_else(invalid)?;
    Ok(Some((at.parse().map_err(|_| invalid())?, id.to_owned())))
}
