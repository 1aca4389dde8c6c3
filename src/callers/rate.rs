//! Each caller's `max_per_minute`: a token bucket per caller name, full at the start, refilled
//! continuously, so a caller may burst up to its minute's allowance and then keeps its pace.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// The buckets, by caller name (names come from the callers file, so they are bounded).
#[derive(Debug, Default)]
pub struct RateLimits {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    per_minute: u32,
    tokens: f64,
    updated: Instant,
}

impl RateLimits {
    /// Takes one call from `caller`'s allowance of `per_minute`; `Err(wait)` says how long
    /// until the next call is allowed.
    pub fn take(&self, caller: &str, per_minute: u32, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = match buckets.get_mut(caller) {
            Some(bucket) => bucket,
            None => buckets.entry(caller.to_owned()).or_insert(Bucket {
                per_minute,
                tokens: f64::from(per_minute),
                updated: now,
            }),
        };
        if bucket.per_minute != per_minute {
            // The file changed the allowance: start the new one full.
            bucket.per_minute = per_minute;
            bucket.tokens = f64::from(per_minute);
        }
        let per_second = f64::from(per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(f64::from(per_minute));
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_may_burst_its_minute_then_keeps_the_pace() {
        let limits = RateLimits::default();
        let start = Instant::now();
        for _ in 0..60 {
            assert!(limits.take("billing", 60, start).is_ok());
        }
        let wait = limits.take("billing", 60, start).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(900));
        assert!(
            limits.take("other", 60, start).is_ok(),
            "callers are separate"
        );
        assert!(
            limits
                .take("billing", 60, start + Duration::from_secs(1))
                .is_ok()
        );
        assert!(
            limits
                .take("billing", 60, start + Duration::from_secs(1))
                .is_err()
        );
    }
}
