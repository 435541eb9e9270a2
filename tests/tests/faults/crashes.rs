//! Crashes: a worker killed mid-batch leaves no partial batch and is fenced when it comes
//! back; data-streams killed mid-ingest loses and duplicates nothing.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use newsflow_core::BatchId;
use newsflow_tests::contract::owner_of;
use newsflow_tests::faults_support::{
    audit, owner, read_stream, spawn_publisher, wait_for_owner, wait_until_ingested, HeartbeatLog,
    INGEST_WITHIN,
};
use newsflow_tests::{hold_for, wait_for, System};
use serde_json::json;

use crate::{
    assert_abandoned, assert_ledger_served, assert_whole, mid_batch, system_for_own_batches,
    MidBatch, BATCH_WITHIN, HEARTBEAT, INGEST_JOBS, MOVE_WITHIN, WORKER_TIMEOUT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_leaves_no_visible_partial_batch_and_its_job_moves_to_a_live_worker(
) {
    let MidBatch {
        mut system,
        bus,
        heartbeats,
        owner: victim,
        other: survivor,
        half,
    } = mid_batch("crash", &[]).await;
    let api = system.api();

    system.kill_worker(&victim);
    let killed_at = Instant::now();

    wait_for_owner(&api, "crash", &survivor, MOVE_WITHIN).await;
    let moved_after = killed_at.elapsed();
    heartbeats
        .wait_for(
            Duration::from_secs(10),
            "the survivor to announce the job",
            killed_at,
            |b| {
                b.worker_id.as_str() == survivor
                    && b.jobs.iter().flatten().any(|j| j.as_str() == "crash")
            },
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

    let lists = |b: &newsflow_nats::wire::Heartbeat| {
        b.jobs.iter().flatten().any(|j| j.as_str() == "fenced")
    };
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
    assert!(api.counter("newsflow_stops_sent_total").await >= 1);
    let page = api.latest("fenced").await;
    assert_whole(&page);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_article_is_stored_exactly_once_after_data_streams_is_killed_mid_ingest()
{
    let mut system = system_for_own_batches().await;
    let api = system.api();
    let bus = system.bus().await;
    // Publishes until stopped, so the kill lands while it publishes however fast or slow
    // ingest is, and it goes on publishing while data-streams is down.
    let publisher = spawn_publisher(&bus, &INGEST_JOBS, 40, None, Duration::from_millis(25));
    wait_for(
        Duration::from_secs(60),
        "ingest to be under way",
        || async { (api.counter("newsflow_articles_stored_total").await >= 200).then_some(()) },
    )
    .await;

    system.kill_data_streams();
    let at_kill = publisher.batches_done.load(Ordering::Relaxed);
    wait_for(
        Duration::from_secs(60),
        "batches published while data-streams is down",
        || async { (publisher.batches_done.load(Ordering::Relaxed) >= at_kill + 8).then_some(()) },
    )
    .await;
    let ledger = publisher.stop().await;
    system.start_data_streams().await;
    let api = system.api();
    wait_until_ingested(&bus, INGEST_WITHIN).await;

    assert_ledger_served(&api, &ledger).await;
    let report = audit(&api, &bus, Some(&ledger)).await;
    eprintln!("{report}");
    report.assert_exactly_once();
    assert_eq!(report.acknowledged, ledger.acked_articles());
    assert_eq!(report.complete_batches, ledger.markers().len());
}
