//! Faults a real deployment meets, each against real processes and a real nats-server: crashes
//! and restarts of every part, a misbehaving NewsAPI, poison on the bus, graceful shutdown and
//! a lost or corrupted store. The standard is JetStream's and Jepsen's: count what was
//! acknowledged, then check that every one of those is stored exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use newsflow_core::{ArticleMessage, BatchId};
use newsflow_tests::contract::{assert_error_info, assert_keys, ids};
use newsflow_tests::faults_support::{
    audit, consumer_info, corrupt_files_under, metric, owner, read_stream,
    spawn_data_streams_through, spawn_data_streams_unready, spawn_publisher, spawn_worker_with,
    synthetic_articles, wait_for_half_batch, wait_for_owner, wait_until_ingested, BatchReader,
    HeartbeatLog, Ledger, Partition, TimingProxy, INGEST_WITHIN,
};
use newsflow_tests::{hold_for, wait_for, Api, Bus, StatusCode, System};
use serde_json::{json, Value};

/// How long a batch may take to be fetched, published, consumed and promoted.
const BATCH_WITHIN: Duration = Duration::from_secs(45);
/// Workers' heartbeat interval in the harness's fast settings.
const HEARTBEAT: Duration = Duration::from_millis(300);
/// data-streams' worker timeout in the harness's fast settings.
const WORKER_TIMEOUT: Duration = Duration::from_millis(1200);
/// How long a job may take to move to another worker once its owner is gone.
const MOVE_WITHIN: Duration = Duration::from_secs(20);
/// The longest a service may take to exit after SIGTERM.
const EXIT_BOUND: Duration = Duration::from_secs(15);

fn owner_of(job: &Value) -> Option<String> {
    job["worker"]["id"].as_str().map(str::to_owned)
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap_or_default().to_owned()
}

/// The batch `id` of `job` as listed.
async fn listed_batch(api: &Api, job: &str, id: &str) -> Value {
    api.batches(job)
        .await
        .into_iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("batch {id} of {job} is not listed"))
}

/// Asserts a batch that lost its worker mid-run is never served: marked incomplete, no
/// articles through its route, no marker on the stream, not the latest.
async fn assert_abandoned(api: &Api, bus: &Bus, job: &str, batch: &str) {
    let listed = listed_batch(api, job, batch).await;
    assert_eq!(listed["status"], "incomplete", "{listed}");
    assert_eq!(listed["error"]["code"], "abandoned", "{listed}");
    let page = api
        .ok(&format!("/jobs/{job}/batches/{batch}/articles"))
        .await;
    assert_eq!(
        page["articles"].as_array().map(Vec::len),
        Some(0),
        "an abandoned batch serves no article: {page}"
    );
    let markers = bus
        .stream_messages(&format!("news.batches.{job}.{batch}"))
        .await;
    assert!(markers.is_empty(), "an abandoned batch got a marker");
    let latest = api.latest(job).await;
    assert_ne!(
        latest["batch"]["id"], batch,
        "the abandoned batch is served"
    );
}

/// Asserts the latest page of `job` is one whole complete batch; returns its id.
fn assert_whole(page: &Value) -> String {
    let batch = &page["batch"];
    let id = id_of(batch);
    assert_eq!(batch["status"], "complete", "{batch}");
    let articles = page["articles"].as_array().cloned().unwrap_or_default();
    assert_eq!(batch["article_count"], articles.len(), "{batch}");
    assert!(
        articles.iter().all(|a| a["batch_id"] == id.as_str()),
        "a page mixes batches: {page}"
    );
    id
}

/// Checks what a test's own publisher saw acknowledged against what data-streams serves,
/// batch by batch, as sets.
async fn assert_ledger_served(api: &Api, ledger: &Ledger) {
    let acked = ledger.articles();
    for ((job, batch), count) in ledger.markers() {
        let want: BTreeSet<String> = acked
            .get(&(job.clone(), batch.clone()))
            .map(|a| a.values().cloned().collect())
            .unwrap_or_default();
        assert_eq!(want.len(), count as usize, "{job}/{batch} ledger");
        let served = api.batch_articles(&job, &batch, 1000).await;
        let got: BTreeSet<String> = ids(&served).into_iter().collect();
        assert_eq!(got.len(), served.len(), "{job}/{batch}: duplicates served");
        let lost: Vec<&String> = want.difference(&got).collect();
        let extra: Vec<&String> = got.difference(&want).collect();
        assert!(
            lost.is_empty() && extra.is_empty(),
            "{job}/{batch}: lost {lost:?}, never acknowledged {extra:?}"
        );
    }
    for (job, newest) in ledger.newest_complete() {
        let latest = api.latest(&job).await;
        assert_eq!(latest["batch"]["id"], newest.as_str(), "latest of {job}");
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Worker crash and fencing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_leaves_no_visible_partial_batch_and_its_job_moves_to_a_live_worker(
) {
    let mut system = System::builder()
        .workers(2)
        .mock_args(["--latency-ms", "300"])
        .start()
        .await;
    let api = system.api();
    let bus = system.bus().await;
    let heartbeats = HeartbeatLog::start(&bus).await;
    api.create_job_ok(&json!({
        "id":"crash","params":{"q":"bitcoin"},"interval_secs":1,"max_pages":4,"page_size":20
    }))
    .await;
    api.wait_for_latest("crash", None, BATCH_WITHIN).await;
    let victim = owner(&api, "crash").await.expect("the job has an owner");
    let survivor = system
        .worker_ids()
        .into_iter()
        .find(|w| *w != victim)
        .expect("a second worker");
    let half = wait_for_half_batch(&api, "crash", 40, BATCH_WITHIN).await;

    system.kill_worker(&victim);
    let killed_at = Instant::now();

    wait_for_owner(&api, "crash", &survivor, MOVE_WITHIN).await;
    let moved_after = killed_at.elapsed();
    heartbeats
        .wait_for(
            Duration::from_secs(10),
            "the survivor to announce the job",
            killed_at,
            |b| b.worker_id.as_str() == survivor && b.jobs.iter().any(|j| j.as_str() == "crash"),
        )
        .await;
    let next = api
        .wait_for_latest("crash", Some(&half), BATCH_WITHIN)
        .await;
    assert_whole(&next);
    assert_eq!(next["batch"]["article_count"], 80);
    assert_abandoned(&api, &bus, "crash", &half).await;
    hold_for(
        Duration::from_secs(3),
        "the half-published batch never to be served",
        || async {
            let page = api.latest("crash").await;
            (page["batch"]["id"] == half.as_str()).then(|| format!("served {page}"))
        },
    )
    .await;
    eprintln!(
        "the job moved to {survivor} {moved_after:?} after {victim} was killed \
         (heartbeat {HEARTBEAT:?}, worker timeout {WORKER_TIMEOUT:?})"
    );
    assert!(
        moved_after < WORKER_TIMEOUT + Duration::from_secs(8),
        "the job took {moved_after:?} to move"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owner_resumed_after_its_job_moved_is_told_to_stop_and_publishes_nothing_more() {
    let mut system = System::builder().workers(2).start().await;
    let api = system.api();
    let bus = system.bus().await;
    let heartbeats = HeartbeatLog::start(&bus).await;
    api.create_job_ok(
        &json!({"id":"fenced","params":{"q":"bitcoin"},"interval_secs":1,"page_size":10}),
    )
    .await;
    api.wait_for_latest("fenced", None, BATCH_WITHIN).await;
    let stale = owner(&api, "fenced").await.expect("the job has an owner");
    let other = system
        .worker_ids()
        .into_iter()
        .find(|w| *w != stale)
        .expect("a second worker");

    system.worker(&stale).signal("STOP");
    let frozen_at = newsflow_core::now_utc();
    wait_for_owner(&api, "fenced", &other, Duration::from_secs(40)).await;
    wait_for(
        BATCH_WITHIN,
        "the new owner to complete a batch",
        || async {
            let page = api.latest("fenced").await;
            let started = page["batch"]["id"].as_str()?.parse::<BatchId>().ok()?;
            let frozen_ms = (frozen_at.unix_timestamp_nanos() / 1_000_000) as u64;
            (started.timestamp_ms() > frozen_ms).then_some(())
        },
    )
    .await;
    // Taken before the signal: the resumed worker beats at once.
    let resumed_at = Instant::now();
    system.worker(&stale).signal("CONT");

    let lists = |b: &newsflow_nats::wire::Heartbeat| b.jobs.iter().any(|j| j.as_str() == "fenced");
    heartbeats
        .wait_for(
            Duration::from_secs(10),
            "the resumed worker to announce the job it still runs",
            resumed_at,
            |b| b.worker_id.as_str() == stale && lists(b),
        )
        .await;
    let (fenced_at, _) = heartbeats
        .wait_for(
            Duration::from_secs(10),
            "the resumed worker to be told to stop the job",
            resumed_at,
            |b| b.worker_id.as_str() == stale && !lists(b),
        )
        .await;
    // One more heartbeat: whatever the job's task had in hand is over.
    let (settled_at, _) = heartbeats
        .wait_for(
            Duration::from_secs(10),
            "another heartbeat of the fenced worker",
            fenced_at + Duration::from_millis(1),
            |b| b.worker_id.as_str() == stale,
        )
        .await;
    let fenced_seq = read_stream(&bus).await.last().map_or(0, |r| r.seq);

    hold_for(
        Duration::from_secs(4),
        "only the new owner to run the job",
        || async {
            if heartbeats
                .since(settled_at)
                .iter()
                .any(|(_, b)| b.worker_id.as_str() == stale && lists(b))
            {
                return Some(format!("{stale} announces the job again"));
            }
            let job = api.job("fenced").await;
            (owner_of(&job).as_deref() != Some(other.as_str()))
                .then(|| format!("the owner changed: {job}"))
        },
    )
    .await;
    assert_eq!(heartbeats.workers_listing("fenced", settled_at), [other]);
    let late: Vec<String> = read_stream(&bus)
        .await
        .into_iter()
        .filter(|r| r.seq > fenced_seq && r.worker.as_deref() == Some(stale.as_str()))
        .map(|r| r.subject)
        .collect();
    assert!(
        late.is_empty(),
        "{stale} published after it was fenced: {late:?}"
    );
    assert!(metric(&api, "newsflow_stops_sent_total").await >= 1);
    let page = api.latest("fenced").await;
    assert_whole(&page);
}

// ---------------------------------------------------------------------------------------------
// 2. data-streams crash during heavy ingest
// ---------------------------------------------------------------------------------------------

const INGEST_JOBS: [&str; 3] = ["ingest-a", "ingest-b", "ingest-c"];

/// A system with no worker and the ingest jobs created (stored, running, unowned), so a test
/// publishes their batches itself.
async fn system_for_own_batches() -> System {
    let system = System::builder().workers(0).start().await;
    let api = system.api();
    for job in INGEST_JOBS {
        api.create_job_ok(&json!({"id":job,"params":{"q":job},"interval_secs":3600}))
            .await;
    }
    system
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_article_is_stored_exactly_once_after_data_streams_is_killed_mid_ingest()
{
    let mut system = system_for_own_batches().await;
    let api = system.api();
    let bus = system.bus().await;
    let publisher = spawn_publisher(&bus, &INGEST_JOBS, 40, Some(20), Duration::ZERO);
    wait_for(
        Duration::from_secs(60),
        "ingest to be under way",
        || async { (metric(&api, "newsflow_articles_stored_total").await >= 200).then_some(()) },
    )
    .await;
    assert!(
        !publisher.is_finished(),
        "the publisher finished before data-streams was killed"
    );

    system.kill_data_streams();
    let ledger = publisher.join().await;
    system.start_data_streams().await;
    let api = system.api();
    wait_until_ingested(&bus, INGEST_WITHIN).await;

    assert_eq!(ledger.markers().len(), INGEST_JOBS.len() * 20);
    assert_ledger_served(&api, &ledger).await;
    let report = audit(&api, &bus, Some(&ledger)).await;
    eprintln!("{report}");
    report.assert_exactly_once();
    assert_eq!(report.acknowledged, ledger.acked_articles());
    assert_eq!(report.complete_batches, INGEST_JOBS.len() * 20);
}

// ---------------------------------------------------------------------------------------------
// 3. nats-server restart mid-stream
// ---------------------------------------------------------------------------------------------

async fn wait_for_readyz(api: &Api, want: StatusCode, within: Duration) {
    wait_for(within, &format!("GET /readyz = {want}"), || async {
        (api.get("/readyz").await.0 == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restart_mid_stream_loses_and_duplicates_nothing_as_both_services_reconnect()
{
    let mut system = System::builder()
        .workers(1)
        .mock_args(["--latency-ms", "250"])
        .start()
        .await;
    let api = system.api();
    api.create_job_ok(&json!({
        "id":"steady","params":{"q":"bitcoin"},"interval_secs":1,"max_pages":4,"page_size":20
    }))
    .await;
    let reader = BatchReader::start(api.base(), &["steady"]);
    api.wait_for_latest("steady", None, BATCH_WITHIN).await;
    let inflight = wait_for_half_batch(&api, "steady", 40, BATCH_WITHIN).await;

    system.nats().stop().await;
    wait_for_readyz(
        &api,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(20),
    )
    .await;
    system.nats().start_again().await;

    wait_for_readyz(&api, StatusCode::OK, Duration::from_secs(60)).await;
    let completed = wait_for(
        Duration::from_secs(90),
        "the batch in flight at the restart to complete",
        || async {
            let batch = listed_batch(&api, "steady", &inflight).await;
            (batch["status"] != "in_progress").then_some(batch)
        },
    )
    .await;
    assert_eq!(completed["status"], "complete", "{completed}");
    assert_eq!(completed["article_count"], 80, "{completed}");
    api.wait_for_latest("steady", Some(&inflight), BATCH_WITHIN)
        .await;
    assert_eq!(owner(&api, "steady").await.as_deref(), Some("worker-1"));
    let (status, _) = api.post_empty("/jobs/steady/stop").await;
    assert_eq!(status, StatusCode::OK);
    let bus = system.bus().await;
    wait_until_ingested(&bus, INGEST_WITHIN).await;
    let report = audit(&api, &bus, None).await;
    eprintln!("{report}");
    report.assert_exactly_once();
    assert!(report.complete_batches >= 3, "{report}");
    let figures = reader.figures();
    assert!(figures.reads > 0, "{figures:?}");
    assert_eq!(
        (figures.partial, figures.mixed, figures.regressions),
        (0, 0, 0),
        "{figures:?}: {:?}",
        reader.problems()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_streams_cut_off_from_nats_past_the_worker_timeout_moves_no_job_when_it_reconnects() {
    let system = System::builder()
        .workers(3)
        .without_data_streams()
        .start()
        .await;
    let nats_addr = system.nats_url().trim_start_matches("nats://").to_owned();
    let link = Partition::start(&nats_addr).await;
    let (_data_streams, api) = spawn_data_streams_through(&system, &link.nats_url()).await;
    let bus = system.bus().await;
    let jobs: Vec<String> = (1..=6).map(|n| format!("cutoff-{n}")).collect();
    for job in &jobs {
        api.create_job_ok(
            &json!({"id":job,"params":{"q":"bitcoin"},"interval_secs":1,"page_size":5}),
        )
        .await;
    }
    let mut owners = BTreeMap::new();
    for job in &jobs {
        api.wait_for_latest(job, None, BATCH_WITHIN).await;
        owners.insert(job.clone(), owner(&api, job).await.expect("an owner"));
    }
    let starts = metric(&api, "newsflow_starts_acked_total").await;
    let heartbeats = HeartbeatLog::start(&bus).await;
    let since = Instant::now();

    link.cut();
    wait_for_readyz(
        &api,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(20),
    )
    .await;
    hold_for(
        WORKER_TIMEOUT * 3,
        "data-streams to stay cut off while the workers run on",
        || async {
            let (status, _) = api.get("/readyz").await;
            (status != StatusCode::SERVICE_UNAVAILABLE).then(|| format!("GET /readyz = {status}"))
        },
    )
    .await;
    link.heal();

    wait_for_readyz(&api, StatusCode::OK, Duration::from_secs(60)).await;
    hold_for(
        Duration::from_secs(4),
        "every job to stay on its owner, started no second time",
        || async {
            for (job, first) in &owners {
                let view = api.job(job).await;
                if owner_of(&view).as_deref() != Some(first.as_str()) {
                    return Some(format!("{job} moved from {first}: {view}"));
                }
                if let Some(double) = heartbeats.double_ownership(job, since, WORKER_TIMEOUT) {
                    return Some(double);
                }
            }
            let now = metric(&api, "newsflow_starts_acked_total").await;
            (now != starts)
                .then(|| format!("{} start(s) sent for jobs that never stopped", now - starts))
        },
    )
    .await;
    for (job, first) in &owners {
        assert_eq!(
            heartbeats.workers_listing(job, since),
            std::slice::from_ref(first),
            "{job}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Restarts of data-streams and of a worker with the other up
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_streams_restart_leaves_running_jobs_on_their_owner_without_double_ownership() {
    let mut system = System::builder().workers(2).start().await;
    let api = system.api();
    let bus = system.bus().await;
    api.create_job_ok(
        &json!({"id":"kept","params":{"q":"bitcoin"},"interval_secs":1,"page_size":10}),
    )
    .await;
    let before = api.wait_for_latest("kept", None, BATCH_WITHIN).await;
    let owner_before = owner(&api, "kept").await.expect("an owner");
    let heartbeats = HeartbeatLog::start(&bus).await;
    let since = Instant::now();

    system.restart_data_streams().await;
    let api = system.api();

    let after = api
        .wait_for_latest("kept", Some(&id_of(&before["batch"])), BATCH_WITHIN)
        .await;
    assert_whole(&after);
    hold_for(
        Duration::from_secs(4),
        "the job to stay on its owner, announced by one worker",
        || async {
            let job = api.job("kept").await;
            if job["state"] != "running" || owner_of(&job) != Some(owner_before.clone()) {
                return Some(format!("the job changed: {job}"));
            }
            heartbeats.double_ownership("kept", since, WORKER_TIMEOUT)
        },
    )
    .await;
    assert_eq!(heartbeats.workers_listing("kept", since), [owner_before]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_leaves_its_jobs_running_on_exactly_one_worker() {
    let mut system = System::builder().workers(2).start().await;
    let api = system.api();
    let bus = system.bus().await;
    let heartbeats = HeartbeatLog::start(&bus).await;
    let since = Instant::now();
    api.create_job_ok(
        &json!({"id":"hop","params":{"q":"bitcoin"},"interval_secs":1,"page_size":10}),
    )
    .await;
    api.wait_for_latest("hop", None, BATCH_WITHIN).await;
    let first = owner(&api, "hop").await.expect("an owner");
    let other = system
        .worker_ids()
        .into_iter()
        .find(|w| *w != first)
        .expect("a second worker");

    let status = system.terminate_worker(&first).await;
    assert!(status.success(), "{first} exited with {status}");
    wait_for_owner(&api, "hop", &other, MOVE_WITHIN).await;
    system.restart_worker(&first).await;
    let restarted_at = newsflow_core::now_utc();

    wait_for(
        BATCH_WITHIN,
        "a batch started after the restart",
        || async {
            let page = api.latest("hop").await;
            let started = newsflow_tests::contract::parse_time(
                page["batch"]["started_at"].as_str()?,
                "started_at",
            );
            (started > restarted_at).then_some(())
        },
    )
    .await;
    let watched_from = Instant::now();
    hold_for(
        Duration::from_secs(4),
        "the job to run on one worker only",
        || async {
            let job = api.job("hop").await;
            if job["state"] != "running" || owner_of(&job).as_deref() != Some(other.as_str()) {
                return Some(format!("the job changed: {job}"));
            }
            heartbeats.double_ownership("hop", since, WORKER_TIMEOUT)
        },
    )
    .await;
    assert_eq!(heartbeats.workers_listing("hop", watched_from), [other]);
}

// ---------------------------------------------------------------------------------------------
// 5. External API faults
// ---------------------------------------------------------------------------------------------

/// A system with one worker running job `id` (every second, 5 articles) whose first batch is
/// complete; returns the system and that batch's id.
async fn running_job(id: &str, worker_args: &[&str]) -> (System, String) {
    let system = System::builder()
        .workers(1)
        .worker_args(worker_args.iter().copied())
        .start()
        .await;
    let api = system.api();
    api.create_job_ok(&json!({"id":id,"params":{"q":"bitcoin"},"interval_secs":1,"page_size":5}))
        .await;
    let page = api.wait_for_latest(id, None, BATCH_WITHIN).await;
    let first = assert_whole(&page);
    (system, first)
}

/// Waits for a failed run of `job` with error `code`: its batch is listed as failed, the job's
/// `last_error` says so, a `failed` marker is on the stream, and the latest complete batch is
/// still served whole. Returns the failed batch's id.
async fn assert_failed_run(api: &Api, bus: &Bus, job: &str, code: &str) -> String {
    let failed = wait_for(
        BATCH_WITHIN,
        &format!("a run of {job} to fail with {code}"),
        || async {
            api.batches(job)
                .await
                .into_iter()
                .find(|b| b["status"] == "failed" && b["error"]["code"] == code)
        },
    )
    .await;
    let failed_id = id_of(&failed);
    assert_error_info(&failed["error"], "the failed batch's error");
    let job_now = api.job(job).await;
    assert_eq!(job_now["last_error"]["code"], code, "{job_now}");
    assert!(
        job_now["last_error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{job_now}"
    );
    let markers = bus
        .stream_messages(&format!("news.batches.{job}.{failed_id}"))
        .await;
    assert_eq!(markers.len(), 1, "one marker for the failed run");
    let marker: Value = serde_json::from_slice(&markers[0].payload).expect("a JSON marker");
    assert_eq!(marker["status"], "failed", "{marker}");
    assert_eq!(marker["error"]["code"], code, "{marker}");
    let page = api.latest(job).await;
    let latest = assert_whole(&page);
    assert!(
        latest < failed_id,
        "the previous complete batch stays the latest"
    );
    failed_id
}

/// After the fault is gone, the job completes a batch again and still reports the failure.
async fn assert_recovers(api: &Api, job: &str, failed: &str, code: &str) {
    let page = api.wait_for_latest(job, Some(failed), BATCH_WITHIN).await;
    assert_whole(&page);
    let job_now = api.job(job).await;
    assert_eq!(
        job_now["last_error"]["code"], code,
        "last_error is kept after a success: {job_now}"
    );
}

/// A system with no worker of its own, a timing proxy in front of the mock, and a worker
/// `timed` fetching through it with `overrides`.
async fn timed_worker(overrides: &[&str]) -> (System, TimingProxy, newsflow_tests::Proc) {
    let system = System::builder().workers(0).start().await;
    let mock = system.mock();
    let proxy = TimingProxy::start(mock.base().trim_start_matches("http://")).await;
    let base = proxy.base();
    let mut flags = vec!["--newsapi-url", base.as_str()];
    flags.extend_from_slice(overrides);
    let worker = spawn_worker_with(&system, "timed", &flags).await;
    (system, proxy, worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_fetch_waits_the_retry_after_before_asking_again() {
    let (system, proxy, _worker) = timed_worker(&[]).await;
    let api = system.api();
    system
        .mock()
        .inject_fault(&json!({"kind":"rate_limited","times":1,"retry_after_secs":2}))
        .await;

    api.create_job_ok(
        &json!({"id":"limited","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":5}),
    )
    .await;

    let page = api.wait_for_latest("limited", None, BATCH_WITHIN).await;
    assert_whole(&page);
    let gaps = proxy.gaps();
    let (status, gap) = gaps.first().copied().expect("two requests");
    assert_eq!(status, Some(429), "{gaps:?}");
    eprintln!("429 with Retry-After: 2 → next request after {gap:?}");
    assert!(gap >= Duration::from_secs(2), "asked again after {gap:?}");
    assert!(
        gap < Duration::from_millis(3500),
        "asked again after {gap:?}"
    );
    let job = api.job("limited").await;
    assert!(
        job["last_error"].is_null(),
        "a retried page is no failure: {job}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_longer_than_the_cap_is_waited_only_up_to_the_cap() {
    let (system, proxy, _worker) = timed_worker(&["--max-retry-after-secs", "1"]).await;
    let api = system.api();
    system
        .mock()
        .inject_fault(&json!({"kind":"rate_limited","times":1,"retry_after_secs":30}))
        .await;

    api.create_job_ok(
        &json!({"id":"capped","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":5}),
    )
    .await;

    let page = api.wait_for_latest("capped", None, BATCH_WITHIN).await;
    assert_whole(&page);
    let (status, gap) = proxy.gaps().first().copied().expect("two requests");
    assert_eq!(status, Some(429));
    eprintln!("429 with Retry-After: 30 and a 1 s cap → next request after {gap:?}");
    assert!(gap >= Duration::from_secs(1), "asked again after {gap:?}");
    assert!(
        gap < Duration::from_millis(2500),
        "asked again after {gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_capped_exponential_backoff_until_the_page_comes() {
    let (system, proxy, _worker) = timed_worker(&[
        "--retry-base-ms",
        "400",
        "--retry-max-ms",
        "1000",
        "--fetch-retries",
        "5",
    ])
    .await;
    let api = system.api();
    let mock = system.mock();
    mock.inject_fault(&json!({"kind":"server_error","times":3}))
        .await;
    mock.inject_fault(&json!({"kind":"unavailable","times":2}))
        .await;

    api.create_job_ok(
        &json!({"id":"flaky","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":5}),
    )
    .await;

    let page = api.wait_for_latest("flaky", None, BATCH_WITHIN).await;
    assert_whole(&page);
    let exchanges = proxy.exchanges();
    let statuses: Vec<Option<u16>> = exchanges.iter().map(|e| e.status).collect();
    assert_eq!(
        statuses,
        [500, 500, 500, 503, 503, 200].map(Some),
        "one page: five failures, then the page"
    );
    let gaps = proxy.gaps();
    eprintln!("backoff gaps: {gaps:?}");
    // Retry n waits a jittered [ceiling/2, ceiling], ceiling = min(400 ms * 2^n, 1000 ms).
    let slack = Duration::from_millis(400);
    for (n, ceiling_ms) in [400u64, 800, 1000, 1000, 1000].into_iter().enumerate() {
        let ceiling = Duration::from_millis(ceiling_ms);
        let gap = gaps[n].1;
        assert!(
            gap >= ceiling / 2,
            "retry {n} came after {gap:?}, before half its ceiling {ceiling:?}"
        );
        assert!(
            gap <= ceiling + slack,
            "retry {n} came after {gap:?}, past its ceiling {ceiling:?}"
        );
    }
    let job = api.job("flaky").await;
    assert!(job["last_error"].is_null(), "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_past_the_retries_fail_the_run_with_a_failed_marker_and_keep_the_last_batch()
{
    let (system, _) = running_job("broken", &[]).await;
    let api = system.api();
    let bus = system.bus().await;
    let mock = system.mock();

    mock.inject_fault(&json!({"kind":"server_error"})).await;
    let failed = assert_failed_run(&api, &bus, "broken", "upstream_error").await;
    mock.clear_faults().await;

    assert_recovers(&api, "broken", &failed, "upstream_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_slower_than_the_timeout_fails_the_run_as_a_timeout_and_the_job_recovers() {
    let (system, _) = running_job(
        "sluggish",
        &["--fetch-timeout-ms", "500", "--fetch-retries", "1"],
    )
    .await;
    let api = system.api();
    let bus = system.bus().await;
    let mock = system.mock();

    mock.inject_fault(&json!({"kind":"slow","delay_ms":3000}))
        .await;
    let failed = assert_failed_run(&api, &bus, "sluggish", "timeout").await;
    mock.clear_faults().await;

    assert_recovers(&api, "sluggish", &failed, "timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_api_port_fails_the_run_as_a_connection_failure_and_the_job_recovers() {
    let (mut system, _) = running_job("unreachable", &[]).await;
    let api = system.api();
    let bus = system.bus().await;

    system.stop_mock().await;
    let failed = assert_failed_run(&api, &bus, "unreachable", "connection_failed").await;
    system.start_mock().await;

    assert_recovers(&api, "unreachable", &failed, "connection_failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_api_body_fails_the_run_and_the_job_recovers() {
    let (system, _) = running_job("garbled", &[]).await;
    let api = system.api();
    let bus = system.bus().await;
    let mock = system.mock();

    mock.inject_fault(&json!({"kind":"malformed"})).await;
    let failed = assert_failed_run(&api, &bus, "garbled", "malformed_response").await;
    mock.clear_faults().await;

    assert_recovers(&api, "garbled", &failed, "malformed_response").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_body_over_the_size_cap_fails_the_run_and_the_job_recovers() {
    let (system, _) = running_job("bloated", &["--max-response-bytes", "32768"]).await;
    let api = system.api();
    let bus = system.bus().await;
    let mock = system.mock();

    mock.inject_fault(&json!({"kind":"oversized","bytes":200_000}))
        .await;
    let failed = assert_failed_run(&api, &bus, "bloated", "response_too_large").await;
    mock.clear_faults().await;

    assert_recovers(&api, "bloated", &failed, "response_too_large").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_api_key_is_recorded_and_the_api_is_not_hammered() {
    let (system, _) = running_job("locked", &[]).await;
    let api = system.api();
    let bus = system.bus().await;
    let mock = system.mock();

    mock.inject_fault(&json!({"kind":"key_invalid"})).await;
    assert_failed_run(&api, &bus, "locked", "api_key_invalid").await;

    let refused = mock.count_status(401).await;
    let requests = mock.stats().await["requests"].as_u64().unwrap_or(0);
    // Eight intervals of a job that runs every second.
    hold_for(
        Duration::from_secs(8),
        "at most one more request to the API",
        || async {
            let now = mock.stats().await["requests"].as_u64().unwrap_or(0);
            (now > requests + 1).then(|| format!("{} more requests", now - requests))
        },
    )
    .await;
    assert!(refused >= 1);
    let job = api.job("locked").await;
    assert_eq!(job["last_error"]["code"], "api_key_invalid", "{job}");
    assert_eq!(job["state"], "running", "{job}");
    assert_whole(&api.latest("locked").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaching_the_plans_result_cap_ends_the_batch_as_complete_not_failed() {
    let system = System::builder()
        .workers(1)
        .mock_args(["--max-results", "40"])
        .start()
        .await;
    let api = system.api();

    api.create_job_ok(&json!({
        "id":"capped-results","params":{"q":"bitcoin"},"interval_secs":3600,"max_pages":5,"page_size":20
    }))
    .await;

    let page = api
        .wait_for_latest("capped-results", None, BATCH_WITHIN)
        .await;
    assert_whole(&page);
    assert_eq!(page["batch"]["article_count"], 40);
    assert!(system.mock().count_status(426).await >= 1);
    let job = api.job("capped-results").await;
    assert!(job["last_error"].is_null(), "{job}");
    let batches = api.batches("capped-results").await;
    assert!(
        batches.iter().all(|b| b["status"] == "complete"),
        "{batches:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Poison messages
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_stream_messages_are_terminated_counted_and_kept_while_good_ones_flow() {
    let system = System::builder().workers(0).start().await;
    let api = system.api();
    let bus = system.bus().await;
    api.create_job_ok(&json!({"id":"good","params":{"q":"bitcoin"},"interval_secs":3600}))
        .await;
    let (b1, b2) = (BatchId::generate(), BatchId::generate());
    let stray = serde_json::to_vec(&ArticleMessage {
        article: synthetic_articles("other", b1, 1).remove(0),
        seq: 0,
    })
    .expect("JSON");
    let marker_b1 = serde_json::to_vec(&json!({"job_id":"good","batch_id":b1.to_string(),"status":"complete",
        "article_count":0,"started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:00:01Z","error":null}))
    .expect("JSON");
    let poison: Vec<(String, Vec<u8>)> = vec![
        ("news.articles.x".to_owned(), b"not json".to_vec()),
        (format!("news.articles.good.{b1}"), b"{garbage".to_vec()),
        ("news.articles.a.b.c".to_owned(), b"{}".to_vec()),
        (format!("news.articles.good.{b1}"), stray),
        (format!("news.batches.good.{b2}"), b"[]".to_vec()),
        (format!("news.batches.good.{b2}"), marker_b1),
    ];

    for (subject, payload) in &poison {
        bus.publish(subject, None, &[], payload.clone()).await;
    }
    let good = synthetic_articles("good", BatchId::generate(), 5);
    let marker = bus.publish_complete_batch(&good).await;

    let page = api.wait_for_latest("good", None, BATCH_WITHIN).await;
    assert_eq!(page["batch"]["id"], marker.batch_id.to_string());
    assert_whole(&page);
    let served: BTreeSet<String> = ids(page["articles"].as_array().expect("articles"))
        .into_iter()
        .collect();
    let sent: BTreeSet<String> = good.iter().map(|a| a.id.as_str().to_owned()).collect();
    assert_eq!(served, sent);
    wait_until_ingested(&bus, INGEST_WITHIN).await;
    let count = poison.len() as u64;
    assert_eq!(metric(&api, "newsflow_poison_messages_total").await, count);
    let letters = api.ok("/dead-letters?limit=100").await;
    let letters = letters["dead_letters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let subjects: Vec<&str> = letters
        .iter()
        .map(|l| l["subject"].as_str().unwrap_or_default())
        .collect();
    let want: Vec<&str> = poison.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(subjects, want, "every poison message is kept, in order");
    for letter in &letters {
        assert!(
            letter["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{letter}"
        );
        assert!(letter["stream_seq"].as_u64().is_some(), "{letter}");
    }
    hold_for(
        Duration::from_secs(3),
        "poison never to be redelivered",
        || async {
            let info = consumer_info(&bus).await.unwrap_or_default();
            if info["num_redelivered"].as_u64().unwrap_or(0) > 0
                || info["num_ack_pending"].as_u64().unwrap_or(0) > 0
            {
                return Some(format!("consumer: {info}"));
            }
            let now = metric(&api, "newsflow_poison_messages_total").await;
            (now != count).then(|| format!("poison counted {now} times"))
        },
    )
    .await;
    let (status, _) = api.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_commands_get_error_replies_and_nothing_crashes() {
    let mut system = System::builder().workers(1).start().await;
    let api = system.api();
    let bus = system.bus().await;
    let stop = "news.ctl.worker.worker-1.stop";
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("news.ctl.start", b"not json".to_vec()),
        ("news.ctl.start", b"{}".to_vec()),
        ("news.ctl.start", br#"{"job":{"id":"Bad Id"}}"#.to_vec()),
        ("news.ctl.start", vec![b' '; 70 * 1024]),
        (stop, b"garbage".to_vec()),
        (stop, br#"{"job":1}"#.to_vec()),
        ("news.ctl.heartbeat", b"{\"worker_id\":".to_vec()),
    ];

    for (subject, payload) in garbage {
        let reply = bus
            .request_bytes(subject, payload, Duration::from_secs(10))
            .await;
        assert_keys(&reply, &["ok", "error"], &format!("the reply on {subject}"));
        assert_eq!(reply["ok"], false, "{subject}: {reply}");
        assert_error_info(&reply["error"], &format!("the error on {subject}"));
    }

    assert!(system.worker("worker-1").is_running());
    assert!(system.data_streams_mut().is_running());
    assert_eq!(metric(&api, "newsflow_invalid_heartbeats_total").await, 1);
    api.create_job_ok(
        &json!({"id":"after-garbage","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":5}),
    )
    .await;
    let page = api
        .wait_for_latest("after-garbage", None, BATCH_WITHIN)
        .await;
    assert_whole(&page);
    assert_eq!(
        owner(&api, "after-garbage").await.as_deref(),
        Some("worker-1")
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Graceful shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_streams_stops_cleanly_on_sigterm_mid_ingest_and_keeps_every_acknowledged_article_once(
) {
    let mut system = system_for_own_batches().await;
    let api = system.api();
    let bus = system.bus().await;
    let publisher = spawn_publisher(&bus, &INGEST_JOBS, 40, Some(12), Duration::ZERO);
    wait_for(
        Duration::from_secs(60),
        "ingest to be under way",
        || async { (metric(&api, "newsflow_articles_stored_total").await >= 200).then_some(()) },
    )
    .await;

    let asked = Instant::now();
    let status = system.terminate_data_streams().await;
    let took = asked.elapsed();

    eprintln!("data-streams exited with {status} {took:?} after SIGTERM mid-ingest");
    assert!(status.success(), "{status}");
    assert!(took < EXIT_BOUND, "took {took:?}");
    assert!(
        system.log_tails(400).contains("store flushed"),
        "data-streams says it flushed its store"
    );
    let ledger = publisher.join().await;
    system.start_data_streams().await;
    let api = system.api();
    wait_until_ingested(&bus, INGEST_WITHIN).await;
    assert_ledger_served(&api, &ledger).await;
    let report = audit(&api, &bus, Some(&ledger)).await;
    report.assert_exactly_once();
    assert_eq!(report.acknowledged, ledger.acked_articles());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stops_cleanly_on_sigterm_mid_batch_and_its_job_moves_on_at_once() {
    let mut system = System::builder()
        .workers(2)
        .mock_args(["--latency-ms", "300"])
        .worker_args(["--shutdown-grace-ms", "3000"])
        .start()
        .await;
    let api = system.api();
    let bus = system.bus().await;
    let heartbeats = HeartbeatLog::start(&bus).await;
    api.create_job_ok(&json!({
        "id":"leaving","params":{"q":"bitcoin"},"interval_secs":1,"max_pages":4,"page_size":20
    }))
    .await;
    api.wait_for_latest("leaving", None, BATCH_WITHIN).await;
    let leaving = owner(&api, "leaving").await.expect("an owner");
    let other = system
        .worker_ids()
        .into_iter()
        .find(|w| *w != leaving)
        .expect("a second worker");
    let half = wait_for_half_batch(&api, "leaving", 40, BATCH_WITHIN).await;

    let asked = Instant::now();
    let status = system.terminate_worker(&leaving).await;
    let took = asked.elapsed();

    eprintln!("{leaving} exited with {status} {took:?} after SIGTERM mid-batch");
    assert!(status.success(), "{status}");
    assert!(took < EXIT_BOUND, "took {took:?}");
    let last = heartbeats
        .since(asked)
        .into_iter()
        .rev()
        .find(|(_, b)| b.worker_id.as_str() == leaving)
        .expect("a heartbeat on the way out");
    assert!(
        last.1.jobs.is_empty(),
        "the last heartbeat lists no job: {:?}",
        last.1
    );
    wait_for_owner(&api, "leaving", &other, MOVE_WITHIN).await;
    let next = api
        .wait_for_latest("leaving", Some(&half), BATCH_WITHIN)
        .await;
    assert_whole(&next);
    assert_abandoned(&api, &bus, "leaving", &half).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_stop_cleanly_on_sigterm_while_nats_is_down() {
    let mut system = System::builder().workers(1).start().await;
    let api = system.api();
    api.create_job_ok(
        &json!({"id":"offline","params":{"q":"bitcoin"},"interval_secs":1,"page_size":5}),
    )
    .await;
    api.wait_for_latest("offline", None, BATCH_WITHIN).await;
    system.nats().stop().await;
    wait_for_readyz(
        &api,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(20),
    )
    .await;

    let asked = Instant::now();
    let worker = system.terminate_worker("worker-1").await;
    let worker_took = asked.elapsed();
    let asked = Instant::now();
    let data_streams = system.terminate_data_streams().await;
    let ds_took = asked.elapsed();

    eprintln!(
        "with NATS down: worker exited {worker} in {worker_took:?}, data-streams {data_streams} in {ds_took:?}"
    );
    assert!(worker.success(), "{worker}");
    assert!(data_streams.success(), "{data_streams}");
    assert!(worker_took < EXIT_BOUND, "worker took {worker_took:?}");
    assert!(ds_took < EXIT_BOUND, "data-streams took {ds_took:?}");
}

// ---------------------------------------------------------------------------------------------
// 8. Rebuild
// ---------------------------------------------------------------------------------------------

/// Everything data-streams derives from the stream, for comparison across a rebuild.
#[derive(Debug, PartialEq)]
struct Derived {
    jobs: BTreeMap<String, Value>,
    latest: BTreeMap<String, Value>,
    complete_batches: BTreeMap<String, Vec<Value>>,
    articles: BTreeMap<String, Vec<Value>>,
    feed: Vec<Value>,
}

async fn derived(api: &Api, jobs: &[&str]) -> Derived {
    let mut out = Derived {
        jobs: BTreeMap::new(),
        latest: BTreeMap::new(),
        complete_batches: BTreeMap::new(),
        articles: BTreeMap::new(),
        feed: api.collect_pages("/articles", "articles", 1000).await,
    };
    for job in jobs {
        let view = api.job(job).await;
        out.jobs.insert(
            (*job).to_owned(),
            json!({
                "endpoint": view["endpoint"], "params": view["params"],
                "interval_secs": view["interval_secs"], "max_pages": view["max_pages"],
                "page_size": view["page_size"], "latest_batch": view["latest_batch"],
            }),
        );
        out.latest.insert((*job).to_owned(), api.latest(job).await);
        let complete: Vec<Value> = api
            .batches(job)
            .await
            .into_iter()
            .filter(|b| b["status"] == "complete")
            .collect();
        for batch in &complete {
            let id = id_of(batch);
            let articles = api.batch_articles(job, &id, 1000).await;
            out.articles.insert(format!("{job}/{id}"), articles);
        }
        out.complete_batches.insert((*job).to_owned(), complete);
    }
    out
}

const REBUILT_JOBS: [&str; 2] = ["rebuilt-a", "rebuilt-b"];

/// Runs two jobs to two complete batches each, then stops the worker so the stream holds
/// still, and returns what data-streams derived from it.
async fn settled_store(system: &mut System) -> Derived {
    let api = system.api();
    api.create_job_ok(&json!({
        "id":"rebuilt-a","params":{"q":"bitcoin"},"interval_secs":1,"max_pages":2,"page_size":10
    }))
    .await;
    api.create_job_ok(
        &json!({"id":"rebuilt-b","params":{"q":"ethereum"},"interval_secs":1,"page_size":7}),
    )
    .await;
    for job in REBUILT_JOBS {
        wait_for(BATCH_WITHIN, &format!("two batches of {job}"), || async {
            let complete = api
                .batches(job)
                .await
                .iter()
                .filter(|b| b["status"] == "complete")
                .count();
            (complete >= 2).then_some(())
        })
        .await;
    }
    let status = system.terminate_worker("worker-1").await;
    assert!(status.success(), "{status}");
    let bus = system.bus().await;
    wait_until_ingested(&bus, INGEST_WITHIN).await;
    derived(&api, &REBUILT_JOBS).await
}

/// Asserts the rebuilt store derives the same data, with the jobs back as stopped ones.
async fn assert_rebuilt(system: &System, before: &Derived) {
    let api = system.api();
    let bus = system.bus().await;
    wait_until_ingested(&bus, INGEST_WITHIN).await;
    let after = derived(&api, &REBUILT_JOBS).await;
    for job in REBUILT_JOBS {
        let view = api.job(job).await;
        assert_eq!(
            view["state"], "stopped",
            "a job known only from the stream: {view}"
        );
        assert!(view["worker"].is_null(), "{view}");
        assert_eq!(after.jobs[job], before.jobs[job], "{job}");
        assert_eq!(after.latest[job], before.latest[job], "latest of {job}");
        assert_eq!(
            after.complete_batches[job], before.complete_batches[job],
            "complete batches of {job}"
        );
    }
    assert_eq!(after.articles, before.articles, "articles of each batch");
    assert_eq!(after.feed, before.feed, "GET /articles");
    assert_eq!(after, *before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_store_is_rebuilt_from_the_stream_identically_with_its_jobs_back_stopped() {
    let mut system = System::builder().workers(1).start().await;
    let before = settled_store(&mut system).await;
    let status = system.terminate_data_streams().await;
    assert!(status.success(), "{status}");

    std::fs::remove_dir_all(system.data_dir()).expect("the store is deleted");
    system.start_data_streams_with(&["--rebuild"]).await;

    assert_rebuilt(&system, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_store_is_refused_without_rebuild_and_rebuilt_identically_with_it() {
    let mut system = System::builder().workers(1).start().await;
    let before = settled_store(&mut system).await;
    let status = system.terminate_data_streams().await;
    assert!(status.success(), "{status}");
    let overwritten = corrupt_files_under(system.data_dir());
    assert!(overwritten > 0, "the store has files");

    let mut refused = spawn_data_streams_unready(&system, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = refused.try_exit() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "data-streams neither refused nor started on a corrupted store: {}",
            refused.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!exit.success(), "data-streams started on garbage");
    assert!(
        refused.logs().contains("--rebuild"),
        "the refusal names --rebuild: {}",
        refused.logs()
    );
    drop(refused);
    system.start_data_streams_with(&["--rebuild"]).await;

    assert_rebuilt(&system, &before).await;
}
