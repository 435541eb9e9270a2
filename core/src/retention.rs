//! Retention: which of a job's batches the store deletes, and when a batch whose marker never
//! came is given up. Pure decisions; data-streams' store writer does the deleting.

use std::time::Duration;

use crate::{BatchId, Interval, KeepBatches};

/// The least time a markerless batch is waited for by default: a slow run of a job with a
/// short interval must not lose its articles while its worker is still fetching pages.
pub const MIN_ABANDON_AFTER: Duration = Duration::from_secs(600);

/// The batches of a job to delete: all but the newest `keep` (of any status), never the latest
/// complete one, which the job's readers are served whatever its age. `newest_first` lists the
/// job's batches newest first (batch ids sort by start time).
pub fn batches_to_prune(
    newest_first: &[BatchId],
    keep: KeepBatches,
    latest_complete: Option<BatchId>,
) -> Vec<BatchId> {
    newest_first
        .iter()
        .skip(keep.get())
        .copied()
        .filter(|&batch| Some(batch) != latest_complete)
        .collect()
}

/// How long a batch without a marker is waited for before it is abandoned: the operator's
/// `--abandon-after-secs` when given, else three of the job's intervals and at least
/// [`MIN_ABANDON_AFTER`] (by then its worker has died or moved on to later runs).
pub fn abandon_after(interval: Option<Interval>, configured: Option<Duration>) -> Duration {
    configured.unwrap_or_else(|| {
        interval
            .map_or(MIN_ABANDON_AFTER, |interval| interval.duration() * 3)
            .max(MIN_ABANDON_AFTER)
    })
}

/// Whether a markerless batch started at `started_ms` (Unix ms) is abandoned at `now_ms`.
pub fn is_abandoned(started_ms: u64, now_ms: u64, after: Duration) -> bool {
    now_ms.saturating_sub(started_ms) >= u64::try_from(after.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(n: u64) -> Vec<BatchId> {
        (0..n)
            .rev()
            .map(|i| BatchId::from_parts(1_000 * (i + 1), 0))
            .collect()
    }

    #[test]
    fn only_batches_past_the_newest_keep_are_pruned() {
        let all = batches(5);
        let keep = KeepBatches::new(3).expect("valid");
        assert_eq!(
            batches_to_prune(&all, keep, Some(all[0])),
            all[3..].to_vec()
        );
        assert!(batches_to_prune(&all[..3], keep, None).is_empty());
    }

    #[test]
    fn the_latest_complete_batch_survives_however_old() {
        let all = batches(6);
        let keep = KeepBatches::new(2).expect("valid");
        let pruned = batches_to_prune(&all, keep, Some(all[4]));
        assert_eq!(pruned, vec![all[2], all[3], all[5]]);
    }

    #[test]
    fn the_default_abandon_time_is_three_intervals_and_at_least_ten_minutes() {
        let minute = Interval::from_secs(60).expect("valid");
        let hour = Interval::from_secs(3600).expect("valid");
        assert_eq!(abandon_after(Some(minute), None), MIN_ABANDON_AFTER);
        assert_eq!(
            abandon_after(Some(hour), None),
            Duration::from_secs(3 * 3600)
        );
        assert_eq!(abandon_after(None, None), MIN_ABANDON_AFTER);
        let two = Duration::from_secs(2);
        assert_eq!(abandon_after(Some(hour), Some(two)), two);
    }

    #[test]
    fn a_batch_is_abandoned_once_it_is_old_enough() {
        let after = Duration::from_secs(2);
        assert!(!is_abandoned(10_000, 11_999, after));
        assert!(is_abandoned(10_000, 12_000, after));
        assert!(!is_abandoned(10_000, 5_000, after));
    }
}
