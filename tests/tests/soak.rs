//! The soak: kill cycles repeated `SOAK_CYCLES` times (default 20) while workers run jobs, a
//! publisher of the test's own feeds the stream and readers poll the latest batches; then the
//! whole stream is audited against what data-streams serves. A storm of concurrent creates,
//! start/stop and reads runs the whole time; every request it sends must be answered (or
//! refused while data-streams is down), never left hanging. `just soak` runs it:
//! `SOAK_CYCLES=5 cargo test -p newsflow-tests --test soak -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use newsflow_tests::faults_support::{
    audit, consumer_info, owner, spawn_publisher, wait_for_half_batch, wait_until_ingested,
    BatchReader, Storm,
};
use newsflow_tests::Bus;
use newsflow_tests::{wait_for, Api, StatusCode, System};
use serde_json::json;

const WORKER_JOBS: [&str; 2] = ["soak-a", "soak-b"];
const OWN_JOBS: [&str; 2] = ["own-a", "own-b"];
const BATCH_WITHIN: Duration = Duration::from_secs(60);

fn cycles() -> usize {
    std::env::var("SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// Waits (up to 3 s) for a moment when data-streams holds deliveries it has not acknowledged
/// yet, a group being applied and flushed; `true` when one was seen.
async fn catch_unacknowledged_deliveries(bus: &Bus) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(info) = consumer_info(bus).await {
            if info["num_ack_pending"].as_u64().unwrap_or(0) > 0 {
                return true;
            }
        }
    }
    false
}

async fn latest_id(api: &Api, job: &str) -> Option<String> {
    api.latest(job).await["batch"]["id"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with `just soak` (SOAK_CYCLES, default 20)"]
async fn kill_cycles_lose_and_duplicate_nothing_and_readers_never_see_a_partial_batch() {
    let cycles = cycles();
    let started = Instant::now();
    let mut system = System::builder()
        .workers(2)
        .mock_args(["--latency-ms", "150"])
        .start()
        .await;
    let mut api = system.api();
    // The audit compares every batch in the stream with data-streams: the soak's jobs keep
    // them all (retention has its own suite).
    api.create_job_ok(&json!({
        "id":"soak-a","params":{"q":"bitcoin"},"interval_secs":1,"max_pages":4,"page_size":20,"keep_batches":1000
    }))
    .await;
    api.create_job_ok(&json!({
        "id":"soak-b","params":{"q":"ethereum"},"interval_secs":1,"max_pages":3,"page_size":20,"keep_batches":1000
    }))
    .await;
    for job in OWN_JOBS {
        // Jobs of the test's own publisher: stored, and stopped so no worker fetches them.
        api.create_job_ok(
            &json!({"id":job,"params":{"q":job},"interval_secs":3600,"keep_batches":1000}),
        )
        .await;
        let (status, body) = api.post_empty(&format!("/jobs/{job}/stop")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    api.create_job_ok(
        &json!({"id":"storm-toggle","params":{"q":"toggle"},"interval_secs":86400,"page_size":1,"keep_batches":1000}),
    )
    .await;
    let readers = BatchReader::start(api.base(), &["soak-a", "soak-b", "own-a", "own-b"]);
    let storm = Storm::start(api.base(), "storm-toggle");
    let publisher = spawn_publisher(
        &system.bus().await,
        &OWN_JOBS,
        30,
        None,
        Duration::from_millis(250),
    );
    for job in WORKER_JOBS {
        api.wait_for_latest(job, None, BATCH_WITHIN).await;
    }
    let mut kills_mid_group = 0;

    for cycle in 1..=cycles {
        let before: Vec<Option<String>> = {
            let mut ids = Vec::new();
            for job in WORKER_JOBS {
                ids.push(latest_id(&api, job).await);
            }
            ids
        };

        // A worker killed mid-batch, then back under the same id.
        let half = wait_for_half_batch(&api, "soak-a", 40, BATCH_WITHIN).await;
        let victim = owner(&api, "soak-a").await.expect("soak-a has an owner");
        system.kill_worker(&victim);
        system.restart_worker(&victim).await;

        // data-streams killed while the publisher and the workers keep the stream busy,
        // preferably with a group delivered and not yet acknowledged.
        let bus = system.bus().await;
        if catch_unacknowledged_deliveries(&bus).await {
            kills_mid_group += 1;
        }
        system.kill_data_streams();
        system.start_data_streams().await;
        api = system.api();
        readers.follow(api.base());
        storm.follow(api.base());

        // The broker stopped and started on the same store.
        system.nats().stop().await;
        system.nats().start_again().await;
        api.wait_ready(Duration::from_secs(60)).await;

        // Healed: every worker job completes a batch newer than before the cycle.
        for (job, before) in WORKER_JOBS.iter().zip(&before) {
            api.wait_for_latest(job, before.as_deref(), BATCH_WITHIN)
                .await;
        }
        let figures = readers.figures();
        eprintln!(
            "soak cycle {cycle}/{cycles}: killed {victim} during {half}; {} articles acknowledged to the publisher ({:?} failed attempts); readers {figures:?}; storm {:?}; {:?} in",
            publisher.ledger.acked_articles(),
            publisher.ledger.failures(),
            storm.figures(),
            started.elapsed()
        );
    }

    let ledger = publisher.stop().await;
    let storm = storm.stop().await;
    for job in WORKER_JOBS {
        let (status, body) = api.post_empty(&format!("/jobs/{job}/stop")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let bus = system.bus().await;
    wait_until_ingested(&bus, Duration::from_secs(180)).await;
    // Every reader sees the final state at least once more.
    let reads = readers.figures().reads;
    wait_for(
        Duration::from_secs(30),
        "the readers to read again",
        || async { (readers.figures().reads > reads + 4).then_some(()) },
    )
    .await;
    let report = audit(&api, &bus, Some(&ledger)).await;
    let figures = readers.figures();
    let partial = figures.partial + figures.mixed;
    println!(
        "soak: {cycles} cycles in {:?}; data-streams killed holding unacknowledged deliveries in {kills_mid_group} of them",
        started.elapsed()
    );
    println!(
        "soak: articles acknowledged: {} ({} to the test's publisher, the rest to workers), in {} complete and {} markerless batches",
        report.acknowledged,
        ledger.acked_articles(),
        report.complete_batches,
        report.markerless_batches
    );
    println!(
        "soak: lost: {}, duplicated: {}, phantom: {}",
        report.lost_count(),
        report.duplicated_count(),
        report.phantom.len()
    );
    println!(
        "soak: partial batches seen by readers: {partial} ({} pages read, {} partial, {} mixed, {} went back, {} while data-streams was down)",
        figures.reads, figures.partial, figures.mixed, figures.regressions, figures.unavailable
    );
    println!(
        "soak: storm requests: {} sent, {} answered, {} refused while data-streams was down, {} unanswered",
        storm.sent, storm.answered, storm.refused, storm.unanswered
    );
    report.assert_exactly_once();
    assert_eq!(
        storm.unanswered, 0,
        "storm requests left unanswered: {storm:?}"
    );
    assert!(
        storm.answered > storm.sent / 2,
        "the storm was mostly refused: {storm:?}"
    );
    assert_eq!(
        (figures.partial, figures.mixed, figures.regressions),
        (0, 0, 0),
        "readers saw: {:?}",
        readers.problems()
    );
}
