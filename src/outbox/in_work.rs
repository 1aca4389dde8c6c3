//! The messages one replica has claimed, and whether each one's send has begun.
//!
//! A claim makes a message SENDING before its slot comes. At shutdown the messages whose send
//! has not begun are given back to the queue; from that moment none of them may begin, or a
//! message given back could also leave from here while another replica sends it.

use std::{collections::HashMap, sync::Mutex};

/// Claimed messages and their progress.
#[derive(Debug, Default)]
pub struct InWork {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Message id → whether its send has begun.
    messages: HashMap<String, bool>,
    stopping: bool,
}

impl InWork {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A message was claimed.
    pub fn claimed(&self, id: &str) {
        self.inner().messages.insert(id.to_owned(), false);
    }

    /// The message's send may begin now: false once the replica is stopping (it was given
    /// back, or is about to be).
    pub fn begin(&self, id: &str) -> bool {
        let mut inner = self.inner();
        if inner.stopping {
            return false;
        }
        inner.messages.insert(id.to_owned(), true);
        true
    }

    /// The message's outcome is recorded (or it was given back).
    pub fn finished(&self, id: &str) {
        self.inner().messages.remove(id);
    }

    /// Every message claimed and not finished (their leases are renewed).
    pub fn ids(&self) -> Vec<String> {
        self.inner().messages.keys().cloned().collect()
    }

    /// Stops every send that has not begun; returns those messages, to be given back.
    pub fn stop(&self) -> Vec<String> {
        let mut inner = self.inner();
        inner.stopping = true;
        inner
            .messages
            .iter()
            .filter(|(_, begun)| !**begun)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopping_returns_the_messages_not_begun_and_lets_none_of_them_begin() {
        let in_work = InWork::default();
        in_work.claimed("a");
        in_work.claimed("b");
        in_work.claimed("c");
        assert!(in_work.begin("a"));
        in_work.finished("c");
        assert_eq!(in_work.stop(), vec!["b".to_owned()]);
        assert!(
            !in_work.begin("b"),
            "a message given back never leaves from here"
        );
        let mut ids = in_work.ids();
        ids.sort();
        assert_eq!(
            ids,
            ["a", "b"],
            "a's send goes on; its lease is still renewed"
        );
    }
}
