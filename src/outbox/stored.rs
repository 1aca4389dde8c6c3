//! Reading a claimed message back from the store as the request it was queued as: its own
//! request, or its batch's template rendered for its recipient (templates are compiled once
//! per batch, not once per message).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use prost::Message;

use super::bulk::BulkTemplate;
use crate::{
    domain::OutgoingMessage,
    proto, requests,
    store::{ClaimedMessage, Store},
};

/// Batch templates kept compiled, at most.
const TEMPLATE_CACHE: usize = 64;

/// Loads stored messages, keeping the templates of recent batches compiled.
pub struct StoredMessages {
    store: Store,
    max_message_bytes: u64,
    templates: Mutex<HashMap<String, Arc<BulkTemplate>>>,
}

impl std::fmt::Debug for StoredMessages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredMessages").finish_non_exhaustive()
    }
}

impl StoredMessages {
    pub fn new(store: Store, max_message_bytes: u64) -> Self {
        Self {
            store,
            max_message_bytes,
            templates: Mutex::new(HashMap::new()),
        }
    }

    /// The message as it was queued, checked again as SendMail checks a request.
    pub async fn load(&self, message: &ClaimedMessage) -> Result<OutgoingMessage, String> {
        let (body, template) = self
            .store
            .message_body(&message.message_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("its body is gone")?;
        let request = match (template, &message.batch_id) {
            (Some(template), Some(batch_id)) => {
                let recipient =
                    proto::BulkRecipient::decode(body.as_slice()).map_err(|e| e.to_string())?;
                let compiled = self.template(batch_id, &template)?;
                compiled.render(0, &recipient).map_err(|e| e.to_string())?
            }
            _ => proto::SendMailRequest::decode(body.as_slice()).map_err(|e| e.to_string())?,
        };
        requests::send_request(request, self.max_message_bytes)
            .map(|parsed| parsed.message)
            .map_err(|e| e.to_string())
    }

    fn template(&self, batch_id: &str, encoded: &[u8]) -> Result<Arc<BulkTemplate>, String> {
        let mut cache = self.templates.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(compiled) = cache.get(batch_id) {
            return Ok(compiled.clone());
        }
        let template = proto::SendMailRequest::decode(encoded).map_err(|e| e.to_string())?;
        let compiled = Arc::new(BulkTemplate::compile(template).map_err(|e| e.to_string())?);
        if cache.len() >= TEMPLATE_CACHE {
            cache.clear();
        }
        cache.insert(batch_id.to_owned(), compiled.clone());
        Ok(compiled)
    }
}
