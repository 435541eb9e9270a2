//! Where a job runs: the least-loaded worker for a start, the moves that even out running jobs,
//! and when a moved job's first run may be, as pure decisions over loads and times.
//!
//! A worker's load is the number of jobs it runs as data-streams counts them (recorded owners
//! plus starts in flight to it). Worker ids are a type parameter, as in [`crate::ownership`].

use std::collections::BTreeMap;
use std::time::Duration;

use time::OffsetDateTime;

/// The worker with the fewest jobs; ties go to the smallest id, so the choice is the same on
/// every run. `None` when there is no candidate.
pub fn least_loaded<W: Ord>(loads: impl IntoIterator<Item = (W, u64)>) -> Option<W> {
    loads
        .into_iter()
        .min_by(|(a, load_a), (b, load_b)| load_a.cmp(load_b).then_with(|| a.cmp(b)))
        .map(|(worker, _)| worker)
}

/// At most `max` moves `(from, to)`, one job each, from the most loaded worker to the least
/// loaded, until no two workers differ by more than one job. The fair share of `n` jobs over
/// `k` workers is `n / k` or one more, so this stops exactly there.
pub fn rebalance_moves<W: Ord + Clone>(loads: &BTreeMap<W, u64>, max: usize) -> Vec<(W, W)> {
    let mut loads = loads.clone();
    let mut moves = Vec::new();
    while moves.len() < max {
        let most = loads
            .iter()
            .max_by(|(a, x), (b, y)| x.cmp(y).then_with(|| b.cmp(a)))
            .map(|(w, &l)| (w.clone(), l));
        let least = loads
            .iter()
            .min_by(|(a, x), (b, y)| x.cmp(y).then_with(|| a.cmp(b)))
            .map(|(w, &l)| (w.clone(), l));
        let (Some((from, high)), Some((to, low))) = (most, least) else {
            break;
        };
        if high <= low.saturating_add(1) {
            break;
        }
        loads.insert(from.clone(), high - 1);
        loads.insert(to.clone(), low + 1);
        moves.push((from, to));
    }
    moves
}

/// When the first run of a job started on a new worker may be, so that the move adds no run to
/// its schedule: one interval after its latest run started (`latest_start`, from the latest
/// batch's id), or at once when that is past or the job never ran.
pub fn not_before(
    latest_start: Option<OffsetDateTime>,
    interval: Duration,
    now: OffsetDateTime,
) -> Option<OffsetDateTime> {
    let due = latest_start? + interval;
    (due > now).then_some(due)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_start_goes_to_the_least_loaded_worker_and_ties_to_the_smallest_id() {
        assert_eq!(least_loaded([("w1", 4), ("w2", 2), ("w3", 3)]), Some("w2"));
        assert_eq!(least_loaded([("w3", 1), ("w2", 1), ("w1", 5)]), Some("w2"));
        assert_eq!(least_loaded::<&str>([]), None);
    }

    #[test]
    fn a_worker_that_joins_gets_the_next_jobs() {
        let mut loads = BTreeMap::from([("w1", 10), ("w2", 10), ("w3", 10), ("w4", 0)]);
        for _ in 0..5 {
            let to = least_loaded(loads.iter().map(|(&w, &l)| (w, l))).expect("a worker");
            assert_eq!(to, "w4");
            *loads.entry(to).or_default() += 1;
        }
    }

    #[test]
    fn rebalancing_moves_from_the_busiest_to_the_idlest_and_stops_at_the_fair_share() {
        let loads = BTreeMap::from([("w1", 10), ("w2", 10), ("w3", 10), ("w4", 0)]);
        let moves = rebalance_moves(&loads, 100);
        assert_eq!(moves.len(), 7);
        assert!(moves.iter().all(|(_, to)| *to == "w4"));
        assert_eq!(rebalance_moves(&loads, 2).len(), 2);
        let even = BTreeMap::from([("w1", 8), ("w2", 7), ("w3", 8)]);
        assert!(rebalance_moves(&even, 100).is_empty());
    }

    #[test]
    fn a_moved_job_runs_one_interval_after_its_latest_run() {
        let t0 = OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let minute = Duration::from_secs(60);
        assert_eq!(
            not_before(Some(t0), minute, t0 + Duration::from_secs(10)),
            Some(t0 + minute)
        );
        assert_eq!(not_before(Some(t0), minute, t0 + minute), None);
        assert_eq!(not_before(None, minute, t0), None);
    }

    proptest! {
        #[test]
        fn after_the_moves_no_two_workers_differ_by_more_than_one(
            loads in proptest::collection::vec(0u64..50, 1..8),
        ) {
            let loads: BTreeMap<usize, u64> = loads.into_iter().enumerate().collect();
            let total: u64 = loads.values().sum();
            let mut after = loads.clone();
            for (from, to) in rebalance_moves(&loads, usize::MAX) {
                prop_assert!(from != to);
                *after.entry(from).or_default() -= 1;
                *after.entry(to).or_default() += 1;
            }
            let high = after.values().max().copied().unwrap_or(0);
            let low = after.values().min().copied().unwrap_or(0);
            prop_assert!(high - low <= 1);
            prop_assert_eq!(after.values().sum::<u64>(), total);
        }
    }
}
