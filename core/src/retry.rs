//! Capped exponential backoff with jitter, and `Retry-After` parsing.

use std::time::Duration;

use time::OffsetDateTime;

/// Capped exponential backoff: attempt `n` waits a random time in `[d/2, d]` where
/// `d = min(max, base * 2^n)` ("equal jitter": spread out, yet never a zero wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff starting at `base` and never waiting more than `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
        }
    }

    /// The wait before retry number `attempt` (0-based), for a `jitter` drawn from `[0, 1)`.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        ceiling.mul_f64(0.5 + jitter / 2.0)
    }

    /// The wait before retry `attempt` when the server named one: the server's wait, capped
    /// at `cap`, and never shorter than the backoff's own.
    pub fn delay_honouring(
        &self,
        attempt: u32,
        jitter: f64,
        server: Option<Duration>,
        cap: Duration,
    ) -> Duration {
        let own = self.delay(attempt, jitter);
        match server {
            Some(asked) => asked.min(cap).max(own.min(cap)),
            None => own,
        }
    }
}

/// Parses `Retry-After`: delta-seconds or an HTTP-date, relative to `now`.
pub fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, format)
        .ok()?
        .assume_utc();
    Some(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(backoff.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(backoff.delay(1, 1.0), Duration::from_millis(200));
        assert_eq!(backoff.delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(backoff.delay(4, 1.0), Duration::from_secs(1));
        assert_eq!(backoff.delay(60, 1.0), Duration::from_secs(1));
        assert_eq!(backoff.delay(0, 0.0), Duration::from_millis(50));
    }

    #[test]
    fn the_servers_retry_after_wins_up_to_the_cap() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let cap = Duration::from_secs(30);
        assert_eq!(
            backoff.delay_honouring(0, 1.0, Some(Duration::from_secs(2)), cap),
            Duration::from_secs(2)
        );
        assert_eq!(
            backoff.delay_honouring(0, 1.0, Some(Duration::from_secs(600)), cap),
            cap
        );
        assert_eq!(
            backoff.delay_honouring(0, 1.0, Some(Duration::ZERO), cap),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = time::macros::datetime!(2026-11-20 08:00:00 UTC);
        assert_eq!(parse_retry_after("5", now), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_retry_after("Fri, 20 Nov 2026 08:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Fri, 20 Nov 2026 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    proptest! {
        #[test]
        fn delays_stay_within_half_and_full_ceiling(attempt in 0u32..100, jitter in 0.0f64..1.0) {
            let backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
            let d = backoff.delay(attempt, jitter);
            prop_assert!(d <= Duration::from_secs(30));
            prop_assert!(d >= Duration::from_millis(125));
        }
    }
}
