//! WatchMessages: the events table read in sequence order, pushed to the caller as they are
//! written (woken by this replica's changes, polling for other replicas'), filtered to what
//! the caller may see.

use std::time::Duration;

use tokio::sync::mpsc;

use super::{Outbox, api::message_state};
use crate::{
    callers::Caller,
    postoffice::Error,
    proto, requests,
    store::{MessageFilter, MessageRecord},
};

/// How often other replicas' events are looked for when nothing wakes the stream.
const POLL: Duration = Duration::from_millis(500);
/// Events read at a time.
const PAGE: u32 = 500;
/// Events buffered for a slow reader before the stream waits for it.
const BUFFER: usize = 256;

/// One event: its sequence number and the message as it was after the change.
pub type Event = (u64, MessageRecord);

impl Outbox {
    /// Streams the events after `after_sequence` matching the request, until the caller goes.
    pub fn watch(
        &self,
        caller: std::sync::Arc<Caller>,
        request: proto::WatchMessagesRequest,
    ) -> Result<mpsc::Receiver<Result<Event, Error>>, Error> {
        let mailbox = requests::optional_mailbox(&request.mailbox)?;
        if let Some(mailbox) = &mailbox
            && !caller.may_send_as(mailbox)
        {
            return Err(Error::NotAllowed {
                caller: caller.name.clone(),
                action: format!("watch the messages of {mailbox}"),
                reason: format!("its mailboxes are {}", caller.mailbox_list()),
            });
        }
        let filter = MessageFilter {
            allowed: (!caller.is_admin()).then(|| caller.mailboxes.clone()),
            mailbox,
            state: message_state(0, "state")?,
            batch_id: (!request.batch_id.is_empty()).then_some(request.batch_id),
        };
        let (sender, receiver) = mpsc::channel(BUFFER);
        let store = self.parts.store.clone();
        let activity = self.activity.clone();
        let mut after = request.after_sequence;
        tokio::spawn(async move {
            loop {
                // Registered before reading, so an event written meanwhile still wakes us.
                let woken = activity.events.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                let events = match store.events_after(after, &filter, PAGE).await {
                    Ok(events) => events,
                    Err(error) => {
                        let _ = sender.send(Err(error.into())).await;
                        return;
                    }
                };
                let full_page = events.len() == PAGE as usize;
                for (sequence, record) in events {
                    after = sequence;
                    if !caller.may_send_as(&record.mailbox) {
                        continue;
                    }
                    if sender.send(Ok((sequence, record))).await.is_err() {
                        return;
                    }
                }
                if full_page {
                    continue;
                }
                tokio::select! {
                    () = &mut woken => {}
                    () = tokio::time::sleep(POLL) => {}
                    () = sender.closed() => return,
                }
            }
        });
        Ok(receiver)
    }
}
