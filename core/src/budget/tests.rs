use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const SEC: u64 = 1_000;

fn start(job: &str, pages: u32, interval_secs: u64) -> Ask<'_> {
    Ask {
        job,
        pages,
        interval_ms: interval_secs * SEC,
        kind: Kind::RunStart,
    }
}

/// Runs `jobs` (id, pages, interval) from `from_ms` for `secs` seconds, each asking at its
/// interval, one request per page; returns the admitted requests per job.
fn simulate(
    ledger: &mut Ledger,
    jobs: &[(&str, u32, u64)],
    from_ms: u64,
    secs: u64,
) -> BTreeMap<String, u32> {
    let mut admitted = BTreeMap::new();
    for second in 0..secs {
        let now = from_ms + second * SEC;
        for (job, pages, interval) in jobs {
            if second % interval != 0 {
                continue;
            }
            for page in 0..*pages {
                let ask = Ask {
                    kind: if page == 0 {
                        Kind::RunStart
                    } else {
                        Kind::InRun
                    },
                    ..start(job, *pages, *interval)
                };
                if ledger.take(ask, now).is_err() {
                    break;
                }
                *admitted.entry(job.to_string()).or_insert(0) += 1;
            }
        }
    }
    admitted
}

#[test]
fn the_cap_refuses_the_request_past_the_budget_until_the_first_one_leaves_the_window() {
    let mut ledger = Ledger::new(2, 10);
    let t0 = 1_000_000 * SEC;

    assert!(ledger.take(start("a", 1, 1), t0).is_ok());
    assert!(ledger.take(start("a", 1, 1), t0 + SEC).is_ok());
    let refused = ledger
        .take(start("a", 1, 1), t0 + 2 * SEC)
        .expect_err("over budget");

    assert!(refused.cap_reached);
    // Stamped at t0 + the sending slack; counted until one window later.
    assert_eq!(refused.returns_at_ms, t0 + SEND_SLACK_MS + 10 * SEC);
    assert!(ledger
        .take(start("a", 1, 1), refused.returns_at_ms - 1)
        .is_err());
    assert!(ledger.take(start("a", 1, 1), refused.returns_at_ms).is_ok());
}

#[test]
fn used_and_resets_at_count_only_the_window() {
    let mut ledger = Ledger::new(10, 30);
    let t0 = 5_000 * SEC;
    ledger.take(start("a", 1, 1), t0).expect("admitted");
    ledger
        .take(start("b", 1, 1), t0 + 5 * SEC)
        .expect("admitted");

    assert_eq!(ledger.used(t0 + 6 * SEC), 2);
    assert_eq!(ledger.resets_at_ms(t0), Some(t0 + SEND_SLACK_MS + 30 * SEC));
    assert_eq!(ledger.used(t0 + SEND_SLACK_MS + 30 * SEC), 1);
    assert_eq!(ledger.used(t0 + 40 * SEC), 0);
    assert_eq!(ledger.resets_at_ms(t0 + 40 * SEC), None);
}

#[test]
fn three_jobs_every_second_share_twelve_requests_equally() {
    let mut ledger = Ledger::new(12, 30);
    let jobs = [("a", 1, 1), ("b", 1, 1), ("c", 1, 1)];

    let admitted = simulate(&mut ledger, &jobs, 1_000 * SEC, 30);

    assert_eq!(admitted.values().sum::<u32>(), 12);
    for job in ["a", "b", "c"] {
        assert_eq!(admitted[job], 4, "{job}: {admitted:?}");
    }
}

#[test]
fn a_greedy_job_cannot_crowd_out_a_quiet_one() {
    let mut ledger = Ledger::new(12, 30);
    // "greedy" would take 150 requests a window; "quiet" plans 3 (one page every 10 s).
    let jobs = [("greedy", 5, 1), ("quiet", 1, 10)];

    let admitted = simulate(&mut ledger, &jobs, 1_000 * SEC, 120);

    assert_eq!(
        admitted["quiet"], 12,
        "every quiet run in 120 s: {admitted:?}"
    );
    assert!(
        admitted["greedy"] >= 30,
        "the rest goes to greedy: {admitted:?}"
    );
}

#[test]
fn with_more_jobs_than_requests_every_job_gets_its_turn() {
    let mut ledger = Ledger::new(4, 10);
    let names: Vec<String> = (0..9).map(|i| format!("job{i}")).collect();
    let jobs: Vec<(&str, u32, u64)> = names.iter().map(|n| (n.as_str(), 1, 1)).collect();

    let admitted = simulate(&mut ledger, &jobs, 1_000 * SEC, 60);

    for name in &names {
        assert!(
            admitted.get(name).copied().unwrap_or(0) >= 1,
            "{name} starved: {admitted:?}"
        );
    }
}

#[test]
fn a_run_under_its_share_may_finish_but_one_over_it_leaves_room_for_others() {
    let mut ledger = Ledger::new(4, 30);
    let t0 = 1_000 * SEC;
    ledger.take(start("a", 1, 1), t0).expect("admitted");
    ledger.take(start("b", 3, 1), t0).expect("admitted");
    let later_page = Ask {
        kind: Kind::InRun,
        ..start("b", 3, 1)
    };

    // Shares are 2 and 2: b's second page is within its share, its third would eat a's.
    assert!(ledger.take(later_page, t0).is_ok());
    let refused = ledger.take(later_page, t0).expect_err("a's share is held");
    assert!(!refused.cap_reached);
    assert!(ledger.take(start("a", 1, 1), t0 + SEC).is_ok());
}

#[test]
fn a_job_that_stopped_asking_no_longer_holds_a_share() {
    let mut ledger = Ledger::new(4, 3_600);
    let t0 = 1_000 * SEC;
    ledger.take(start("gone", 1, 1), t0).expect("admitted");

    let later = t0 + 60 * SEC;
    let admitted = (0..3)
        .filter(|_| ledger.take(start("a", 1, 1), later).is_ok())
        .count();

    assert_eq!(admitted, 3, "gone's unused share is free again: {ledger:?}");
    assert!(!ledger.asks.contains_key("gone"));
}

#[test]
fn stamps_are_coalesced_per_granule_so_a_large_budget_stays_small() {
    let mut ledger = Ledger::new(250_000, 30 * 24 * 3600);
    let t0 = 1_000 * SEC;
    for i in 0..10_000 {
        ledger
            .take(
                Ask {
                    kind: Kind::InRun,
                    ..start("a", 1, 1)
                },
                t0 + i * 100,
            )
            .expect("admitted");
    }
    assert_eq!(ledger.used(t0 + 1_000 * SEC), 10_000);
    assert!(ledger.grants.len() <= 2, "{} grants", ledger.grants.len());
}

#[test]
fn the_ledger_keeps_its_bounds_however_many_jobs_ask() {
    // A budget nothing reaches, a day's window, 2,000 jobs asking over a whole window, the
    // first ones also fetching a page in every part of it.
    let mut ledger = Ledger::new(u32::MAX, 86_400);
    let part = 86_400 * SEC / USE_PARTS;
    let names: Vec<String> = (0..2_000).map(|i| format!("{i:0>64}")).collect();
    let mut now = 1_000_000 * SEC;
    for round in 0..USE_PARTS + 8 {
        let newcomers = names.iter().cycle().skip(round as usize * 40).take(40);
        for name in newcomers.chain(names.iter().take(40)) {
            let _ = ledger.take(start(name, 2, 86_400), now);
            let in_run = Ask {
                kind: Kind::InRun,
                ..start(name, 2, 86_400)
            };
            let _ = ledger.take(in_run, now + SEC);
        }
        now += part;
    }
    assert!(
        ledger.asks.len() <= MAX_ASKERS,
        "{} askers",
        ledger.asks.len()
    );
    assert!(ledger.grants.len() as u64 <= MAX_GRANULES + 2);
    let most_used = ledger.asks.values().map(|a| a.used.len()).max();
    assert!(
        most_used.is_some_and(|n| n as u64 <= USE_PARTS + 2),
        "{most_used:?}"
    );
    assert!(
        most_used.is_some_and(|n| n as u64 > USE_PARTS / 2),
        "{most_used:?}"
    );
}

#[test]
fn a_ledger_at_its_bounds_is_far_under_the_nats_payload_limit() {
    let stamps = |count: u64| -> Vec<Grant> {
        (0..count)
            .map(|i| Grant {
                at_ms: 1_800_000_000_000 + i,
                n: u32::MAX,
            })
            .collect()
    };
    let mut ledger = Ledger::new(u32::MAX, u64::from(u32::MAX));
    ledger.grants = stamps(MAX_GRANULES + 2);
    for i in 0..MAX_ASKERS {
        let asker = Asker {
            live_until_ms: u64::MAX,
            demand: u64::MAX,
            served_ms: u64::MAX,
            first_ask_ms: u64::MAX,
            used: stamps(USE_PARTS + 2),
        };
        ledger.asks.insert(format!("{i:0>64}"), asker);
    }

    let bytes = serde_json::to_vec(&ledger).expect("serializes").len();

    assert!(bytes < 750 * 1024, "{bytes} bytes");
}

#[test]
fn a_full_ledger_forgets_the_job_served_last_and_a_newcomer_waits_behind_those_that_waited() {
    let mut ledger = Ledger::new(1_000, 3_600);
    let t0 = 1_000_000 * SEC;
    let names: Vec<String> = (0..MAX_ASKERS).map(|i| format!("job{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        ledger
            .take(start(name, 1, 3_600), t0 + i as u64)
            .expect("admitted");
    }
    assert_eq!(ledger.asks.len(), MAX_ASKERS);

    // Every remembered job was served; the newcomer takes the place of the one served last.
    let later = t0 + 10 * SEC;
    ledger
        .take(start("new", 1, 3_600), later)
        .expect("admitted");
    assert!(ledger.asks.contains_key("new"));
    assert!(!ledger.asks.contains_key(names.last().expect("names")));
    assert_eq!(ledger.asks.len(), MAX_ASKERS);
    // The forgotten job's requests still count against the cap.
    assert_eq!(ledger.used(later), MAX_ASKERS as u64 + 1);

    // A ledger full of jobs still waiting: a newcomer is last in line and does not start...
    let mut waiting = Ledger::new(1, 3_600);
    let page = Ask {
        kind: Kind::InRun,
        ..start("first", 1, 3_600)
    };
    waiting.take(page, t0).expect("admitted");
    for name in &names[1..] {
        assert!(waiting.take(start(name, 1, 3_600), t0 + SEC).is_err());
    }
    assert_eq!(waiting.asks.len(), MAX_ASKERS);
    let refused = waiting
        .take(start("late", 1, 3_600), t0 + 2 * SEC)
        .expect_err("last in line");
    assert!(!waiting.asks.contains_key("late"));
    assert!(refused.returns_at_ms > t0);
    // ...but a run in progress of a job the ledger does not remember meets the cap only.
    let mut roomy = Ledger::new(10_000, 3_600);
    for name in &names {
        let _ = roomy.take(start(name, 1, 3_600), t0);
    }
    for name in &names {
        let _ = roomy.take(start(name, 1, 3_600), t0 + SEC);
    }
    let in_run = Ask {
        kind: Kind::InRun,
        ..start("forgotten", 2, 3_600)
    };
    assert!(roomy.take(in_run, t0 + 2 * SEC).is_ok());
}

#[test]
fn planned_requests_are_pages_times_runs_per_window() {
    assert_eq!(planned_requests(1, 300 * SEC, 43_200 * SEC), 144);
    assert_eq!(planned_requests(2, 3_600 * SEC, 43_200 * SEC), 24);
    assert_eq!(planned_requests(1, 86_400 * SEC, 43_200 * SEC), 1);
    assert_eq!(planned_requests(1, 7 * SEC, 30 * SEC), 5);
}

#[test]
fn fair_shares_give_quiet_jobs_their_plan_and_split_the_rest() {
    let asks: BTreeMap<String, Asker> = [("a", 100), ("b", 100), ("q", 2)]
        .into_iter()
        .map(|(job, demand)| {
            let asker = Asker {
                live_until_ms: u64::MAX,
                demand,
                served_ms: 0,
                first_ask_ms: 0,
                used: Vec::new(),
            };
            (job.to_owned(), asker)
        })
        .collect();

    let shares = fair_shares(&asks, 12);

    assert_eq!(shares["q"], 2.0);
    assert_eq!(shares["a"], 5.0);
    assert_eq!(shares["b"], 5.0);
}

#[test]
fn a_fingerprint_is_sixteen_hex_digits_that_do_not_contain_the_key() {
    let print = fingerprint("0123456789abcdef0123456789abcdef");
    assert_eq!(print.len(), 16);
    assert!(print.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(!"0123456789abcdef0123456789abcdef".contains(&print));
    assert_eq!(print, fingerprint("0123456789abcdef0123456789abcdef"));
    assert_ne!(print, fingerprint("another-key-entirely"));
}

#[test]
fn a_ledger_round_trips_through_json() {
    let mut ledger = Ledger::new(50, 43_200);
    ledger
        .take(start("a", 1, 300), 1_000 * SEC)
        .expect("admitted");
    let text = serde_json::to_string(&ledger).expect("serializes");
    assert_eq!(
        serde_json::from_str::<Ledger>(&text).expect("parses"),
        ledger
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The cap holds too when more jobs ask than the ledger remembers (long intervals keep
    /// them all asking), whatever is forgotten and when.
    #[test]
    fn no_window_holds_more_than_the_budget_when_jobs_are_forgotten(
        budget in 1u32..400,
        window_secs in 1u64..600,
        steps in proptest::collection::vec((0u64..500, 0usize..(MAX_ASKERS * 2), any::<bool>(), 0u64..=SEND_SLACK_MS), 1..1_200),
    ) {
        let mut ledger = Ledger::new(budget, window_secs);
        let names: Vec<String> = (0..MAX_ASKERS * 2).map(|i| format!("job{i}")).collect();
        let mut now = 1_000_000 * SEC;
        let mut sent = Vec::new();
        for (advance, job, first, delay) in steps {
            now += advance;
            let kind = if first { Kind::RunStart } else { Kind::InRun };
            let ask = Ask { job: &names[job], pages: 2, interval_ms: 86_400 * SEC, kind };
            if ledger.take(ask, now).is_ok() {
                sent.push(now + delay);
            }
            prop_assert!(ledger.asks.len() <= MAX_ASKERS);
        }
        sent.sort_unstable();
        let window = window_secs * SEC;
        for (i, first) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|t| **t < first + window).count();
            prop_assert!(in_window <= budget as usize, "{in_window} sent in one window of {window} ms");
        }
    }
}

proptest! {
    /// Whatever the jobs ask and however long each admitted request takes to reach NewsAPI (up
    /// to the slack), no window holds more than the budget of sent requests.
    #[test]
    fn no_window_ever_holds_more_than_the_budget(
        budget in 1u32..20,
        window_secs in 1u64..60,
        steps in proptest::collection::vec((0u64..3_000, 0usize..4, any::<bool>(), 0u64..=SEND_SLACK_MS), 1..400),
    ) {
        let mut ledger = Ledger::new(budget, window_secs);
        let jobs = ["a", "b", "c", "d"];
        let mut now = 1_000_000 * SEC;
        let mut sent = Vec::new();
        for (advance, job, first, delay) in steps {
            now += advance;
            let kind = if first { Kind::RunStart } else { Kind::InRun };
            let ask = Ask { job: jobs[job], pages: 2, interval_ms: SEC, kind };
            if ledger.take(ask, now).is_ok() {
                sent.push(now + delay);
            }
        }
        sent.sort_unstable();
        let window = window_secs * SEC;
        for (i, first) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|t| **t < first + window).count();
            prop_assert!(in_window <= budget as usize, "{in_window} sent in one window of {window} ms");
        }
    }
}
