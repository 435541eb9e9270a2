//! When a job runs next.

use std::time::{Duration, Instant};

/// The longest a failing job waits between runs because of its failures (its own interval may
/// be longer).
pub const MAX_FAILURE_DELAY: Duration = Duration::from_secs(3600);

/// When the next run is due: one interval after the last run started, so runs do not drift by
/// their own duration. A run that overran its interval is followed at once, but only once:
/// missed runs are not replayed in a burst.
pub fn next_due(last_start: Instant, interval: Duration, now: Instant) -> Instant {
    (last_start + interval).max(now)
}

/// The wait after a run that failed for a reason retrying cannot fix (a bad key, a rejected
/// query): the interval doubled for each such failure in a row, capped, so a broken job does
/// not hammer the API. With no failures in a row, the interval itself.
pub fn failure_delay(interval: Duration, failures_in_a_row: u32) -> Duration {
    if failures_in_a_row == 0 {
        return interval;
    }
    let factor = 1u32
        .checked_shl(failures_in_a_row.min(16))
        .unwrap_or(u32::MAX);
    interval
        .saturating_mul(factor)
        .min(MAX_FAILURE_DELAY.max(interval))
}

/// How late a run started: zero when on time.
pub fn lateness(due: Instant, started: Instant) -> Duration {
    started.saturating_duration_since(due)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_spaced_from_their_start() {
        let t0 = Instant::now();
        let interval = Duration::from_secs(300);
        assert_eq!(
            next_due(t0, interval, t0 + Duration::from_secs(2)),
            t0 + interval
        );
    }

    #[test]
    fn an_overrun_is_followed_at_once_without_a_burst() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(1000);
        assert_eq!(next_due(t0, Duration::from_secs(300), now), now);
    }

    #[test]
    fn failures_in_a_row_back_off_up_to_the_cap() {
        let interval = Duration::from_secs(60);
        assert_eq!(failure_delay(interval, 0), interval);
        assert_eq!(failure_delay(interval, 1), Duration::from_secs(120));
        assert_eq!(failure_delay(interval, 3), Duration::from_secs(480));
        assert_eq!(failure_delay(interval, 40), MAX_FAILURE_DELAY);
        assert_eq!(
            failure_delay(Duration::from_secs(86_400), 2),
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn lateness_is_never_negative() {
        let t0 = Instant::now();
        assert_eq!(lateness(t0 + Duration::from_secs(1), t0), Duration::ZERO);
        assert_eq!(
            lateness(t0, t0 + Duration::from_millis(7)),
            Duration::from_millis(7)
        );
    }
}
