//! nats-server restarted mid-stream, and data-streams cut off from it past the worker timeout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use newsflow_tests::contract::owner_of;
use newsflow_tests::faults_support::{
    audit, owner, spawn_data_streams_through, wait_for_half_batch, wait_until_ingested,
    BatchReader, HeartbeatLog, Partition, INGEST_WITHIN,
};
use newsflow_tests::{hold_for, wait_for, StatusCode, System};
use serde_json::json;

use crate::{assert_reads_whole, listed_batch, BATCH_WITHIN, WORKER_TIMEOUT};

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
        "id":"steady","params":{"q":"bitcoin"},"interval_secs":1,"max_pages":4,"page_size":20,
        "keep_batches":1000
    }))
    .await;
    let reader = BatchReader::start(api.base(), &["steady"]);
    api.wait_for_latest("steady", None, BATCH_WITHIN).await;
    let inflight = wait_for_half_batch(&api, "steady", 40, BATCH_WITHIN).await;

    system.nats().stop().await;
    api.wait_for_readyz(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(20))
        .await;
    system.nats().start_again().await;

    api.wait_for_readyz(StatusCode::OK, Duration::from_secs(60))
        .await;
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
    assert_reads_whole(&reader);
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
    let starts = api.counter("newsflow_starts_acked_total").await;
    let heartbeats = HeartbeatLog::start(&bus).await;
    let since = Instant::now();

    link.cut();
    api.wait_for_readyz(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(20))
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

    api.wait_for_readyz(StatusCode::OK, Duration::from_secs(60))
        .await;
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
            let now = api.counter("newsflow_starts_acked_total").await;
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
