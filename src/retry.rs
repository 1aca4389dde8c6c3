//! The one retry policy: exponential backoff with full jitter, bounded by attempts and by time,
//! and Microsoft's `Retry-After` when it gives one.
//!
//! Graph calls and token refreshes both go through [`retry`]; what differs between them (which
//! failures are worth another attempt, what to count and log) is passed in by the caller.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use rand::Rng;

/// When and how often a failed operation is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first delay; it doubles with every attempt.
    pub base: Duration,
    /// No computed delay exceeds this (a `Retry-After` may).
    pub cap: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Total time the attempts and the waits between them may take; `None`: no limit.
    pub budget: Option<Duration>,
}

impl Backoff {
    /// The delay before attempt `attempt + 1` after attempt `attempt` (1-based) failed:
    /// `retry_after` when the server named one, else a random duration in
    /// `[0, min(cap, base × 2^(attempt-1)))` ("full jitter").
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after;
        }
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.cap);
        ceiling.mul_f64(rand::rng().random_range(0.0..1.0))
    }

    /// Whether another attempt fits the budget after `attempt` attempts, `elapsed` since the
    /// first began, waiting `delay` first.
    pub fn allows(&self, attempt: u32, elapsed: Duration, delay: Duration) -> bool {
        attempt < self.max_attempts && self.budget.is_none_or(|b| elapsed + delay <= b)
    }
}

/// What the caller makes of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Worth another attempt, after `retry_after` if the server named a delay.
    Retry { retry_after: Option<Duration> },
    /// Final: another attempt cannot succeed or must not be made.
    Stop,
}

/// An operation that failed for good.
#[derive(Debug)]
pub struct GaveUp<E> {
    /// The last failure.
    pub error: E,
    /// How many attempts were made.
    pub attempts: u32,
    /// The failure was worth retrying, but the attempts or the time ran out.
    pub exhausted: bool,
}

/// Runs `operation` until it succeeds, `decide` says stop, or `backoff` runs out; the time
/// budget counts from `since` (several operations of one task may share it). Before each new
/// attempt, `on_retry` learns the failure, the attempt that failed and the delay.
pub async fn retry<T, E, Op, Fut>(
    backoff: &Backoff,
    since: Instant,
    mut operation: Op,
    mut decide: impl FnMut(&E) -> Decision,
    mut on_retry: impl FnMut(&E, u32, Duration),
) -> Result<T, GaveUp<E>>
where
    Op: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match operation().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let Decision::Retry { retry_after } = decide(&error) else {
            return Err(GaveUp {
                error,
                attempts: attempt,
                exhausted: false,
            });
        };
        let delay = backoff.delay(attempt, retry_after);
        if !backoff.allows(attempt, since.elapsed(), delay) {
            return Err(GaveUp {
                error,
                attempts: attempt,
                exhausted: true,
            });
        }
        on_retry(&error, attempt, delay);
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn backoff(max_attempts: u32, budget: Option<Duration>) -> Backoff {
        Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(400),
            max_attempts,
            budget,
        }
    }

    #[test]
    fn delays_are_full_jitter_under_a_doubling_ceiling_and_the_cap() {
        let policy = backoff(10, None);
        for (attempt, ceiling) in [(1, 100), (2, 200), (3, 400), (4, 400), (30, 400)] {
            let delays: Vec<Duration> = (0..200).map(|_| policy.delay(attempt, None)).collect();
            let ceiling = Duration::from_millis(ceiling);
            assert!(delays.iter().all(|d| *d < ceiling), "attempt {attempt}");
            // Full jitter reaches down to zero, not only to half the ceiling.
            assert!(
                delays.iter().any(|d| *d < ceiling / 4),
                "attempt {attempt}: {delays:?}"
            );
        }
    }

    #[test]
    fn a_retry_after_is_honoured_even_above_the_cap() {
        let policy = backoff(10, None);
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn attempts_and_time_both_bound_the_retries() {
        let policy = backoff(3, Some(Duration::from_secs(10)));
        assert!(policy.allows(2, Duration::ZERO, Duration::from_secs(1)));
        assert!(!policy.allows(3, Duration::ZERO, Duration::from_secs(1)));
        assert!(!policy.allows(1, Duration::from_secs(9), Duration::from_secs(2)));
        assert!(backoff(3, None).allows(1, Duration::from_secs(86_400), Duration::from_secs(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_and_reports_each_retry() {
        let calls = AtomicU32::new(0);
        let mut retried = Vec::new();
        let result = retry(
            &backoff(5, None),
            Instant::now(),
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err("busy"),
                    _ => Ok(42),
                }
            },
            |_| Decision::Retry { retry_after: None },
            |error, attempt, _| retried.push((*error, attempt)),
        )
        .await;
        assert_eq!(result.unwrap(), 42);
        assert_eq!(retried, [("busy", 1), ("busy", 2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_failure_stops_at_once_and_an_endless_one_exhausts_the_budget() {
        let stopped = retry(
            &backoff(5, None),
            Instant::now(),
            || async { Err::<(), _>("refused") },
            |_| Decision::Stop,
            |_, _, _| panic!("no retry"),
        )
        .await
        .unwrap_err();
        assert_eq!((stopped.attempts, stopped.exhausted), (1, false));

        let exhausted = retry(
            &backoff(3, None),
            Instant::now(),
            || async { Err::<(), _>("busy") },
            |_| Decision::Retry {
                retry_after: Some(Duration::from_secs(1)),
            },
            |_, _, _| {},
        )
        .await
        .unwrap_err();
        assert_eq!((exhausted.attempts, exhausted.exhausted), (3, true));
    }
}
