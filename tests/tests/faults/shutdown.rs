//! Graceful shutdown on SIGTERM: mid-ingest, mid-batch and while nats-server is down.

use std::time::{Duration, Instant};

use newsflow_tests::faults_support::{
    audit, spawn_publisher, wait_for_owner, wait_until_ingested, INGEST_WITHIN,
};
use newsflow_tests::{wait_for, StatusCode, System};
use serde_json::json;

use crate::{
    assert_abandoned, assert_ledger_served, assert_whole, mid_batch, system_for_own_batches,
    MidBatch, BATCH_WITHIN, EXIT_BOUND, INGEST_JOBS, MOVE_WITHIN,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_streams_stops_cleanly_on_sigterm_mid_ingest_and_keeps_every_acknowledged_article_once(
) {
    let mut system = system_for_own_batches().await;
    let api = system.api();
    let bus = system.bus().await;
    // Publishes until stopped, so SIGTERM lands while it publishes however fast ingest is.
    let publisher = spawn_publisher(&bus, &INGEST_JOBS, 40, None, Duration::from_millis(25));
    wait_for(
        Duration::from_secs(60),
        "ingest to be under way",
        || async { (api.counter("newsflow_articles_stored_total").await >= 200).then_some(()) },
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
    let ledger = publisher.stop().await;
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
    let MidBatch {
        mut system,
        bus,
        heartbeats,
        owner: leaving,
        other,
        half,
    } = mid_batch("leaving", &["--shutdown-grace-ms", "3000"]).await;
    let api = system.api();

    let asked = Instant::now();
    // SIGTERM waits while the owner is frozen mid-batch, and is the first thing it sees.
    let frozen = system.worker(&leaving);
    frozen.signal("TERM");
    frozen.signal("CONT");
    let status = frozen
        .wait_exit(EXIT_BOUND * 2)
        .await
        .unwrap_or_else(|| panic!("{leaving} did not exit after SIGTERM"));
    let took = asked.elapsed();

    eprintln!("{leaving} exited with {status} {took:?} after SIGTERM mid-batch");
    assert!(status.success(), "{status}");
    assert!(took < EXIT_BOUND, "took {took:?}");
    // Sent before the exit, it may still be on its way to the log.
    heartbeats
        .wait_for(
            Duration::from_secs(10),
            "a heartbeat on the way out that lists no job",
            asked,
            |b| b.worker_id.as_str() == leaving && b.count == Some(0),
        )
        .await;
    let last = heartbeats
        .since(asked)
        .into_iter()
        .rev()
        .find(|(_, b)| b.worker_id.as_str() == leaving)
        .expect("a heartbeat on the way out");
    assert!(
        last.1.count == Some(0),
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
    api.wait_for_readyz(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(20))
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
