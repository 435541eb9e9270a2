//! Placement and control at scale: starts go to the least-loaded live worker, a worker that
//! joins takes new jobs (and with `--rebalance` running ones), a killed worker's jobs move,
//! no scheduled run yields two visible batches across moves, a worker whose digest differs
//! from the record is asked for its list, and 2,500 jobs page with cursors while a worker
//! holding more than 1,000 of them heartbeats by digest alone.
//!
//! The even-placement cases play the workers over NATS (`FakeWorker`), so the counts are
//! data-streams' decisions alone; the moves and the 2,500 jobs run on real workers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use newsflow_tests::contract::owner_of;
use newsflow_tests::fake_worker::FakeWorker;
use newsflow_tests::{wait_for, Api, System};
use serde_json::{json, Value};

/// The heartbeat of the tests' workers (`FAST_WORKER_ARGS`), real and fake.
const HEARTBEAT: Duration = Duration::from_millis(300);
const SETTLE_WITHIN: Duration = Duration::from_secs(20);

fn body(id: &str, interval_secs: u64) -> Value {
    json!({
        "id": id, "endpoint": "everything", "params": {"q": "bitcoin"},
        "interval_secs": interval_secs, "max_pages": 1, "page_size": 5
    })
}

/// Creates `ids` all at once, each answered 201.
async fn create_concurrently(api: &Api, ids: &[String], interval_secs: u64) {
    let creates = ids.iter().map(|id| {
        let api = api.clone();
        let id = id.clone();
        async move {
            let (status, answer) = api.create_job(&body(&id, interval_secs)).await;
            assert_eq!(status.as_u16(), 201, "creating {id}: {answer}");
        }
    });
    futures::future::join_all(creates).await;
}

/// Each job's recorded owner, once every one of `ids` has one.
async fn owners(api: &Api, ids: &[String]) -> BTreeMap<String, String> {
    wait_for(SETTLE_WITHIN, "every job to have an owner", || async {
        let mut owners = BTreeMap::new();
        for id in ids {
            owners.insert(id.clone(), owner_of(&api.job(id).await)?);
        }
        Some(owners)
    })
    .await
}

fn per_worker(owners: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for owner in owners.values() {
        *counts.entry(owner.clone()).or_default() += 1;
    }
    counts
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:02}")).collect()
}

async fn wait_alive(api: &Api, n: f64) {
    wait_for(SETTLE_WITHIN, "the workers to be heard", || async {
        (api.metric("newsflow_workers_alive").await == Some(n)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_jobs_created_at_once_spread_evenly_and_a_worker_that_joins_gets_new_jobs_first() {
    let system = System::builder().start().await;
    let api = system.api();
    let bus = system.bus().await;
    let mut workers = Vec::new();
    for id in ["fake-1", "fake-2", "fake-3"] {
        workers.push(FakeWorker::start(bus.client(), id, &[], HEARTBEAT).await);
    }
    wait_alive(&api, 3.0).await;

    let first = ids("even", 30);
    create_concurrently(&api, &first, 3600).await;

    let counts = per_worker(&owners(&api, &first).await);
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (worker, count) in &counts {
        assert!(
            (8..=12).contains(count),
            "{worker} runs {count}: {counts:?}"
        );
    }
    let joined = FakeWorker::start(bus.client(), "fake-4", &[], HEARTBEAT).await;
    wait_alive(&api, 4.0).await;
    let next = ids("after-join", 5);
    create_concurrently(&api, &next, 3600).await;
    let placed = owners(&api, &next).await;
    assert!(
        placed.values().all(|owner| owner == joined.id()),
        "new jobs went to {placed:?}"
    );
    // Every start was addressed: the starts the fakes saw are exactly the jobs.
    let started: usize = workers
        .iter()
        .chain([&joined])
        .map(|w| w.read(|s| s.starts.len()))
        .sum();
    assert_eq!(started, 35);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_rebalance_running_jobs_move_to_a_worker_that_joins_stopped_first() {
    let system = System::builder()
        .data_streams_args(["--rebalance"])
        .start()
        .await;
    let api = system.api();
    let bus = system.bus().await;
    let mut workers = Vec::new();
    for id in ["fake-1", "fake-2", "fake-3"] {
        workers.push(FakeWorker::start(bus.client(), id, &[], HEARTBEAT).await);
    }
    wait_alive(&api, 3.0).await;
    let jobs = ids("rebalance", 30);
    create_concurrently(&api, &jobs, 3600).await;
    owners(&api, &jobs).await;

    let joined = FakeWorker::start(bus.client(), "fake-4", &[], HEARTBEAT).await;
    let counts = wait_for(SETTLE_WITHIN, "the jobs to even out", || async {
        let counts = per_worker(&owners(&api, &jobs).await);
        let even = counts.len() == 4 && counts.values().all(|c| (7..=8).contains(c));
        even.then_some(counts)
    })
    .await;
    assert_eq!(counts.get(joined.id()), Some(&7), "{counts:?}");
    // Each moved job was stopped on its old worker before it was started on the new one.
    let moved: BTreeSet<String> = joined.read(|s| {
        s.starts
            .iter()
            .map(|start| start.job.id().to_string())
            .collect()
    });
    let stopped: BTreeSet<String> = workers
        .iter()
        .flat_map(|w| w.read(|s| s.stops.iter().map(|j| j.to_string()).collect::<Vec<_>>()))
        .collect();
    assert_eq!(moved, stopped);
    for worker in &workers {
        worker.read(|s| {
            assert!(s.jobs.iter().all(|j| !moved.contains(j.as_str())));
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_digest_differs_is_asked_for_its_list_then_adopts_fences_and_settles() {
    let system = System::builder().start().await;
    let api = system.api();
    for id in ["adopt-a", "adopt-b", "started-c", "stopped-s"] {
        api.create_job_ok(&body(id, 3600)).await;
    }
    let (status, answer) = api.post_empty("/jobs/stopped-s/stop").await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    let bus = system.bus().await;

    // It runs two ownerless jobs and a stopped one; data-streams knows none of it.
    let fake = FakeWorker::start(
        bus.client(),
        "fake-digest",
        &["adopt-a", "adopt-b", "stopped-s"],
        HEARTBEAT,
    )
    .await;

    for id in ["adopt-a", "adopt-b", "started-c"] {
        wait_for(SETTLE_WITHIN, "the job to be the fake's", || async {
            (owner_of(&api.job(id).await).as_deref() == Some("fake-digest")).then_some(())
        })
        .await;
    }
    wait_for(SETTLE_WITHIN, "the stopped job to be fenced", || async {
        fake.read(|s| s.stops.iter().any(|j| j.as_str() == "stopped-s"))
            .then_some(())
    })
    .await;
    assert!(fake.read(|s| s.list_requests) >= 1);
    let started: Vec<String> = fake.read(|s| {
        s.starts
            .iter()
            .map(|start| start.job.id().to_string())
            .collect()
    });
    assert!(started.iter().any(|j| j == "started-c"), "{started:?}");
    assert!(!started.iter().any(|j| j == "stopped-s"), "{started:?}");
    // Its digest now equals the record: no more list requests, heartbeat after heartbeat.
    // A heartbeat sent before the fence may still be decided after it (one list request
    // more), so first it settles: no new request over four heartbeats.
    let mut seen = (fake.read(|s| s.list_requests), Instant::now());
    let settled = wait_for(SETTLE_WITHIN, "list requests to stop", || {
        let now = fake.read(|s| s.list_requests);
        if now != seen.0 {
            seen = (now, Instant::now());
        }
        let quiet = seen.1.elapsed() >= HEARTBEAT * 4;
        async move { quiet.then_some(now) }
    })
    .await;
    tokio::time::sleep(HEARTBEAT * 8).await;
    assert_eq!(
        fake.read(|s| s.list_requests),
        settled,
        "a list request after the digests agreed"
    );
    assert_eq!(api.counter("newsflow_invalid_heartbeats_total").await, 0);
}

/// Complete batches of `job`, by run start.
async fn complete_starts(api: &Api, job: &str) -> Vec<time::OffsetDateTime> {
    let mut starts: Vec<time::OffsetDateTime> = api
        .batches(job)
        .await
        .iter()
        .filter(|b| b["status"] == "complete")
        .map(|b| {
            newsflow_tests::contract::parse_time(
                b["started_at"].as_str().unwrap_or(""),
                "started_at",
            )
        })
        .collect();
    starts.sort();
    starts
}

/// No two complete batches of a job start less than half an interval apart: each scheduled
/// run is visible at most once.
async fn assert_no_doubled_runs(api: &Api, jobs: &[String], interval: Duration) {
    for job in jobs {
        let starts = complete_starts(api, job).await;
        for pair in starts.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= interval / 2,
                "{job} has two visible batches {gap} apart: {starts:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_jobs_run_on_the_others_without_a_doubled_run() {
    let interval = Duration::from_secs(3);
    let mut system = System::builder().workers(3).start().await;
    let api = system.api();
    wait_alive(&api, 3.0).await;
    let jobs = ids("kill", 9);
    create_concurrently(&api, &jobs, interval.as_secs()).await;
    let before = owners(&api, &jobs).await;
    for job in &jobs {
        api.wait_for_latest(job, None, SETTLE_WITHIN).await;
    }
    let counts = per_worker(&before);
    let victim = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(w, _)| w.clone())
        .unwrap_or_default();
    let victims: Vec<String> = before
        .iter()
        .filter(|(_, owner)| **owner == victim)
        .map(|(job, _)| job.clone())
        .collect();

    system.kill_worker(&victim);
    let killed = Instant::now();
    let moved = wait_for(SETTLE_WITHIN, "the victim's jobs to move", || async {
        for job in &victims {
            let owner = owner_of(&api.job(job).await)?;
            if owner == victim {
                return None;
            }
        }
        Some(killed.elapsed())
    })
    .await;
    eprintln!(
        "{} jobs of the killed {victim} moved {moved:?} after the kill (heartbeat {HEARTBEAT:?})",
        victims.len()
    );
    // Two more runs of each moved job, then check the schedule was kept across the move.
    for job in &victims {
        let latest = api.latest(job).await;
        let first = latest["batch"]["id"].as_str().map(str::to_owned);
        let after = api
            .wait_for_latest(job, first.as_deref(), SETTLE_WITHIN)
            .await;
        let second = after["batch"]["id"].as_str().map(str::to_owned);
        api.wait_for_latest(job, second.as_deref(), SETTLE_WITHIN)
            .await;
    }
    assert_no_doubled_runs(&api, &jobs, interval).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalancing_real_workers_moves_jobs_without_a_doubled_run() {
    let interval = Duration::from_secs(2);
    let mut system = System::builder()
        .workers(2)
        .data_streams_args(["--rebalance"])
        .start()
        .await;
    let api = system.api();
    wait_alive(&api, 2.0).await;
    let jobs = ids("move", 8);
    create_concurrently(&api, &jobs, interval.as_secs()).await;
    owners(&api, &jobs).await;
    for job in &jobs {
        api.wait_for_latest(job, None, SETTLE_WITHIN).await;
    }
    let joined = system.start_worker().await;
    wait_for(
        SETTLE_WITHIN,
        "the joined worker to run its share",
        || async {
            let counts = per_worker(&owners(&api, &jobs).await);
            (counts.get(&joined).copied() >= Some(2)).then_some(())
        },
    )
    .await;
    // Two more runs everywhere after the moves.
    for job in &jobs {
        let first = api.latest(job).await["batch"]["id"]
            .as_str()
            .map(str::to_owned);
        let next = api
            .wait_for_latest(job, first.as_deref(), SETTLE_WITHIN)
            .await;
        let second = next["batch"]["id"].as_str().map(str::to_owned);
        api.wait_for_latest(job, second.as_deref(), SETTLE_WITHIN)
            .await;
    }
    assert_no_doubled_runs(&api, &jobs, interval).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_hundred_jobs_page_with_cursors_and_a_worker_with_more_than_a_thousand_heartbeats_by_digest(
) {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    wait_alive(&api, 1.0).await;
    let jobs: Vec<String> = (0..2500).map(|i| format!("many-{i:04}")).collect();
    for chunk in jobs.chunks(100) {
        create_concurrently(&api, chunk, 86_400).await;
    }
    let listed = api.collect_pages("/jobs", "jobs", 1000).await;
    let listed: Vec<String> = listed
        .iter()
        .filter_map(|j| j["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        listed, jobs,
        "every job once, in id order, over three pages"
    );
    let owned = wait_for(
        SETTLE_WITHIN,
        "every job to have the worker as owner",
        || async {
            let page = api.collect_pages("/jobs", "jobs", 1000).await;
            page.iter()
                .all(|j| owner_of(j).is_some())
                .then_some(page.len())
        },
    )
    .await;
    assert_eq!(owned, 2500);

    // Its heartbeats carry no list now, and nothing is restarted or fenced for heartbeats on end.
    let bus = system.bus().await;
    let mut heartbeats = bus.heartbeats().await;
    let beat = heartbeats
        .wait_for(
            Duration::from_secs(5),
            "a digest heartbeat",
            "worker-1",
            |b| b.count == Some(2500),
        )
        .await;
    assert!(beat.jobs.is_none());
    let starts = api.counter("newsflow_starts_acked_total").await;
    let stops = api.counter("newsflow_stops_sent_total").await;
    for _ in 0..5 {
        heartbeats.next_within(Duration::from_secs(2)).await;
    }
    assert_eq!(api.counter("newsflow_starts_acked_total").await, starts);
    assert_eq!(api.counter("newsflow_stops_sent_total").await, stops);
    assert_eq!(api.counter("newsflow_invalid_heartbeats_total").await, 0);
}
