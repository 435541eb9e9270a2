//! The NewsAPI request budget (issue 10, points 4-6): every worker on one key shares one budget,
//! counted request by request at the mock over a sliding window; when jobs want more than the
//! budget, each gets a fair share, a skipped run publishes nothing and says why; job views show
//! the plan (`next_run_at`, `consecutive_failures`), `GET /quota` the shared count, and creates
//! and starts warn when the running jobs plan more than the budget.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use newsflow_tests::contract::{assert_error, assert_job};
use newsflow_tests::{poll_until, wait_for, Api, StatusCode, System};
use serde_json::{json, Value};

const WITHIN: Duration = Duration::from_secs(30);

fn job(id: &str, interval_secs: u64) -> Value {
    json!({"id": id, "params": {"q": id}, "interval_secs": interval_secs, "page_size": 5})
}

/// The mock's request arrival times (ms since the epoch), oldest first.
async fn arrivals(system: &System) -> Vec<u64> {
    let stats = system.mock().stats().await;
    stats["arrivals_ms"]
        .as_array()
        .expect("arrivals_ms")
        .iter()
        .map(|t| t.as_u64().expect("a number"))
        .collect()
}

/// The most requests that arrived within any window of `window_ms`.
fn busiest_window(sorted: &[u64], window_ms: u64) -> usize {
    sorted
        .iter()
        .enumerate()
        .map(|(i, start)| {
            sorted[i..]
                .iter()
                .take_while(|t| **t < start + window_ms)
                .count()
        })
        .max()
        .unwrap_or(0)
}

async fn wait_for_budget_known(api: &Api, budget: u64) -> Value {
    wait_for(WITHIN, "the workers' budget in GET /quota", || async {
        let (status, quota) = api.get("/quota").await;
        (status == StatusCode::OK && quota["keys"][0]["budget"] == budget).then_some(quota)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_sharing_a_key_never_send_more_than_the_budget_in_any_window() {
    let (budget, window_secs) = (8u64, 6u64);
    let system = System::builder()
        .workers(2)
        .worker_args([
            "--request-budget".to_owned(),
            budget.to_string(),
            "--budget-window-secs".to_owned(),
            window_secs.to_string(),
        ])
        .start()
        .await;
    let api = system.api();
    wait_for_budget_known(&api, budget).await;

    // Jobs every second, created concurrently, until both workers run some (the queue group
    // picks at random): at least 72 requests wanted per window of 6 s, from both workers racing
    // on one ledger.
    let mut created = 0;
    let mut owners = std::collections::BTreeSet::new();
    while owners.len() < 2 && created < 48 {
        let creates = (created..created + 12).map(|i| {
            let api = api.clone();
            async move { api.create_job(&job(&format!("share-{i}"), 1)).await }
        });
        for (status, body) in futures::future::join_all(creates).await {
            assert_eq!(status, StatusCode::CREATED, "{body}");
            owners.extend(body["worker"]["id"].as_str().map(str::to_owned));
        }
        created += 12;
    }
    assert_eq!(owners.len(), 2, "both workers run jobs: {owners:?}");

    // Three windows' worth of budget spent.
    let wanted = 3 * budget as usize;
    let sent = wait_for(
        Duration::from_secs(60),
        "three windows of requests",
        || async {
            let sent = arrivals(&system).await;
            (sent.len() >= wanted).then_some(sent)
        },
    )
    .await;

    let busiest = busiest_window(&sent, window_secs * 1000);
    assert!(
        busiest <= budget as usize,
        "{busiest} requests within {window_secs} s (budget {budget}): {sent:?}"
    );
    let (status, quota) = api.get("/quota").await;
    assert_eq!(status, StatusCode::OK, "{quota}");
    let keys = quota["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "one key, one ledger: {quota}");
    let key = &keys[0];
    assert_eq!(key["window_secs"], window_secs);
    assert!(key["used"].as_u64().expect("used") <= budget, "{quota}");
    assert!(key["fingerprint"].as_str().is_some_and(|f| f.len() == 16));
    assert!(
        !quota.to_string().contains(newsflow_tests::mock::DEMO_KEY),
        "{quota}"
    );
    assert!(
        key["used"].as_u64() == Some(0) || key["resets_at"].is_string(),
        "{quota}"
    );
    system.mock().reset().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_jobs_every_second_each_complete_two_batches_in_thirty_seconds_on_twelve_requests() {
    let system = System::builder()
        .workers(1)
        .worker_args(["--request-budget", "12", "--budget-window-secs", "30"])
        .start()
        .await;
    let api = system.api();
    wait_for_budget_known(&api, 12).await;

    let started = Instant::now();
    for id in ["fair-a", "fair-b", "fair-c"] {
        api.create_job_ok(&job(id, 1)).await;
    }
    let counts = wait_for(WITHIN, "two complete batches per job", || async {
        let mut counts = BTreeMap::new();
        for id in ["fair-a", "fair-b", "fair-c"] {
            let complete = api
                .batches(id)
                .await
                .iter()
                .filter(|b| b["status"] == "complete")
                .count();
            counts.insert(id, complete);
        }
        counts.values().all(|n| *n >= 2).then_some(counts)
    })
    .await;
    assert!(
        started.elapsed() <= Duration::from_secs(30),
        "{counts:?} after {:?}",
        started.elapsed()
    );

    // The budget is spent: runs are skipped, publish nothing, and say when budget returns.
    let skipped = wait_for(WITHIN, "a skipped run on a job", || async {
        let job = api.job("fair-a").await;
        (job["last_error"]["code"] == "budget_exhausted").then_some(job)
    })
    .await;
    assert_job(&skipped);
    let message = skipped["last_error"]["message"].as_str().expect("message");
    let returns_at = message
        .split_whitespace()
        .find_map(|word| {
            time::OffsetDateTime::parse(word, &time::format_description::well_known::Rfc3339).ok()
        })
        .unwrap_or_else(|| panic!("says when budget returns: {message}"));
    assert!(returns_at > newsflow_core::now_utc(), "{message}");
    assert!(message.contains("request budget"), "{message}");
    assert!(
        skipped["consecutive_failures"].as_u64() >= Some(1),
        "{skipped}"
    );
    assert!(skipped["next_run_at"].is_string(), "{skipped}");
    // Every batch stored is a run that sent its request; no skipped run left a batch. A
    // request the mock just answered may have no batch stored yet: counted once both settle.
    let (requests, batches) = wait_for(WITHIN, "requests and batches to settle", || async {
        let before = arrivals(&system).await.len();
        let mut batches = 0;
        for id in ["fair-a", "fair-b", "fair-c"] {
            batches += api.batches(id).await.len();
        }
        let after = arrivals(&system).await.len();
        (before == after && batches >= after).then_some((after, batches))
    })
    .await;
    assert!(
        requests <= 12,
        "{requests} requests within the first window"
    );
    assert_eq!(
        batches, requests,
        "one batch per request sent, none per skipped run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_show_in_job_views_and_creates_warn_when_running_jobs_exceed_the_budget() {
    // The free plan's budget, as NewsAPI meters it.
    let mut system = System::builder()
        .workers(1)
        .worker_args(["--request-budget", "50", "--budget-window-secs", "43200"])
        .start()
        .await;
    let api = system.api();
    wait_for_budget_known(&api, 50).await;

    // One page a day: 1 request per 12 hours. No warning.
    let (status, daily) = api.create_job(&job("daily", 86_400)).await;
    assert_eq!(status, StatusCode::CREATED, "{daily}");
    assert_job(&daily);
    assert_eq!(daily["warnings"], json!([]), "{daily}");
    let planned = wait_for(WITHIN, "daily's next run a day after its first", || async {
        let job = api.job("daily").await;
        let next = job["next_run_at"]
            .as_str()
            .map(|text| newsflow_tests::contract::parse_time(text, "next_run_at"))?;
        (job["latest_batch"].is_object()
            && next > newsflow_core::now_utc() + time::Duration::hours(23))
        .then_some(job)
    })
    .await;
    assert_eq!(planned["consecutive_failures"], 0, "{planned}");

    // The default five minutes: 144 requests per 12 hours, over the budget of 50.
    let (status, frequent) = api.create_job(&job("frequent", 300)).await;
    assert_eq!(status, StatusCode::CREATED, "{frequent}");
    assert_job(&frequent);
    let warnings = frequent["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{frequent}");
    assert_eq!(warnings[0]["code"], "over_budget");
    let message = warnings[0]["message"].as_str().expect("message");
    assert!(
        message.contains("145") && message.contains("50"),
        "{message}"
    );

    // Stopped: no next run. Started again: the warning again.
    let (status, stopped) = api.post_empty("/jobs/frequent/stop").await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert!(stopped["next_run_at"].is_null(), "{stopped}");
    let (status, started) = api.post_empty("/jobs/frequent/start").await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["warnings"][0]["code"], "over_budget", "{started}");

    // A restarted data-streams reads the plans already written (no run in between).
    system.restart_data_streams().await;
    let api = system.api();
    let reread = wait_for(WITHIN, "daily's plan after a restart", || async {
        let job = api.job("daily").await;
        job["next_run_at"].is_string().then_some(job)
    })
    .await;
    assert_eq!(reread["next_run_at"], planned["next_run_at"], "{reread}");

    // The count is shared and visible.
    let quota = wait_for(WITHIN, "GET /quota after the restart", || async {
        let (status, quota) = api.get("/quota").await;
        (status == StatusCode::OK && !quota["keys"].as_array()?.is_empty()).then_some(quota)
    })
    .await;
    let key = &quota["keys"][0];
    assert_eq!(
        (key["budget"].as_u64(), key["window_secs"].as_u64()),
        (Some(50), Some(43_200))
    );
    assert!(key["used"].as_u64() >= Some(2), "{quota}");
    assert!(key["resets_at"].is_string(), "{quota}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_is_unavailable_while_nats_is_down_and_returns_after() {
    let mut system = System::builder()
        .workers(1)
        .worker_args(["--request-budget", "50"])
        .start()
        .await;
    let api = system.api();
    wait_for_budget_known(&api, 50).await;

    system.nats().stop().await;
    let refused = wait_for(WITHIN, "GET /quota refused", || async {
        let (status, body) = api.get("/quota").await;
        (status == StatusCode::SERVICE_UNAVAILABLE).then_some(body)
    })
    .await;
    assert_error(&refused, "not_ready");

    system.nats().start_again().await;
    let before = wait_for_budget_known(&api, 50).await["keys"][0]["used"]
        .as_u64()
        .expect("used");

    // The copy follows the ledger again: a new job's request shows up in the count.
    api.create_job_ok(&job("after-restart", 3600)).await;
    let counted = poll_until(WITHIN, || async {
        let (status, quota) = api.get("/quota").await;
        (status == StatusCode::OK && quota["keys"][0]["used"].as_u64() > Some(before))
            .then_some(quota)
    })
    .await;
    assert!(
        counted.is_some(),
        "GET /quota follows the ledger after NATS came back"
    );
    let planned = poll_until(WITHIN, || async {
        let job = api.job("after-restart").await;
        job["next_run_at"].is_string().then_some(job)
    })
    .await;
    assert!(
        planned.is_some(),
        "job plans are followed after NATS came back"
    );
}
