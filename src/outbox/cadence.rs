//! Keeps one replica's sends of a mailbox at least a slot apart as they actually leave, not
//! only as they were planned.
//!
//! The store gives each message a slot a spacing apart, but a send can leave late (a busy
//! CPU, a wait for a free worker) while the next one leaves on time: the two then go closer
//! than the spacing, and a window of Exchange's per-minute limit can hold one send too many.
//! Each send here takes the later of its slot and the previous send's departure plus the
//! spacing, so lateness shifts the cadence without ever compressing it; the rate stays one
//! send per spacing.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Departures remembered, at most, before the stale ones are forgotten.
const REMEMBERED: usize = 4096;

/// The last departure of each mailbox this replica sent from.
#[derive(Debug)]
pub struct Cadence {
    spacing: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

impl Cadence {
    pub fn new(spacing: Duration) -> Self {
        Self {
            spacing,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// When the mailbox's next send may leave, given that it is due `now`; the departure is
    /// booked, so a second call waits a further spacing.
    pub fn book(&self, mailbox: &str, now: Instant) -> Instant {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() >= REMEMBERED {
            let spacing = self.spacing;
            last.retain(|_, at| now.saturating_duration_since(*at) < spacing);
        }
        let departure = match last.get(mailbox) {
            Some(previous) => now.max(*previous + self.spacing),
            None => now,
        };
        last.insert(mailbox.to_owned(), departure);
        departure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_of_one_mailbox_leave_a_spacing_apart_and_other_mailboxes_do_not_wait() {
        let cadence = Cadence::new(Duration::from_millis(500));
        let start = Instant::now();
        assert_eq!(cadence.book("a@x.com", start), start);
        let late = start + Duration::from_millis(700);
        assert_eq!(
            cadence.book("b@x.com", late),
            late,
            "another mailbox waits not"
        );
        let next = cadence.book("a@x.com", start + Duration::from_millis(500));
        assert_eq!(next, start + Duration::from_millis(500));
        // Due 100 ms after the previous send left (it was late): it waits a full spacing.
        let after = cadence.book("a@x.com", start + Duration::from_millis(600));
        assert_eq!(after, start + Duration::from_millis(1000));
    }

    #[test]
    fn a_send_due_after_the_spacing_leaves_when_due() {
        let cadence = Cadence::new(Duration::from_millis(500));
        let start = Instant::now();
        cadence.book("a@x.com", start);
        let due = start + Duration::from_secs(3);
        assert_eq!(cadence.book("a@x.com", due), due);
    }
}
