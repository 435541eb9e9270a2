//! A 3-node nats-server cluster with `NEWS` at 3 replicas and every client given all three
//! URLs: a node killed with SIGKILL mid-ingest and brought back later, and a rolling restart of
//! all three nodes one by one. Both services fail over by themselves, and what the stream
//! acknowledged is served exactly once, in whole batches.

use std::time::{Duration, Instant};

use newsflow_tests::faults_support::{
    audit, read_stream, wait_until_ingested, BatchReader, INGEST_WITHIN,
};
use newsflow_tests::{wait_for, Api, Bus, StatusCode, System};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::{assert_reads_whole, BATCH_WITHIN};

/// The jobs the worker runs on the cluster.
const JOBS: [&str; 3] = ["cl-a", "cl-b", "cl-c"];

/// How long the cluster may take to elect new leaders and the clients to fail over.
const FAILOVER_WITHIN: Duration = Duration::from_secs(60);

/// Two workers and data-streams on a 3-node cluster, the jobs created and each with a first
/// complete batch.
async fn cluster_system() -> (System, Api, Bus) {
    let system = System::builder()
        .cluster()
        .workers(2)
        .mock_args(["--latency-ms", "100"])
        .start()
        .await;
    let api = system.api();
    let bus = system.bus().await;
    for job in JOBS {
        // Every batch kept: the audit compares the whole stream with what is served, and a
        // slow failover can run a job past the default 20 batches.
        api.create_job_ok(&json!({
            "id":job,"params":{"q":job},"interval_secs":1,"max_pages":3,"page_size":20,
            "keep_batches":1000
        }))
        .await;
    }
    for job in JOBS {
        api.wait_for_latest(job, None, BATCH_WITHIN).await;
    }
    // Retried: one request may time out on a loaded machine.
    let info = wait_for(FAILOVER_WITHIN, "the stream's info", || stream_info(&bus)).await;
    assert_eq!(info["config"]["num_replicas"], 3, "{}", info["config"]);
    (system, api, bus)
}

/// The raw `$JS.API.STREAM.INFO.NEWS` answer (its JSON is the same on every server version).
async fn stream_info(bus: &Bus) -> Option<Value> {
    // Short, so a request lost with a node does not hold the poll for the client's 10 s.
    let reply = tokio::time::timeout(
        Duration::from_secs(1),
        bus.client()
            .request("$JS.API.STREAM.INFO.NEWS", bytes::Bytes::new()),
    )
    .await
    .ok()?
    .ok()?;
    let body: Value = serde_json::from_slice(&reply.payload).ok()?;
    body.get("error").is_none().then_some(body)
}

/// The stream leader's server name and the stream's last sequence.
async fn leader_and_last_seq(bus: &Bus) -> Option<(String, u64)> {
    let info = stream_info(bus).await?;
    let leader = info["cluster"]["leader"].as_str()?.to_owned();
    Some((leader, info["state"]["last_seq"].as_u64()?))
}

/// Waits until the stream has a leader and both followers are current (so the next node may
/// go down without losing the quorum).
async fn wait_stream_whole(bus: &Bus) {
    wait_for(
        FAILOVER_WITHIN,
        "the stream to have three current replicas",
        || async {
            let info = stream_info(bus).await?;
            let replicas = info["cluster"]["replicas"].as_array()?;
            let whole = info["cluster"]["leader"].is_string()
                && replicas.len() == 2
                && replicas
                    .iter()
                    .all(|r| r["current"] == true && r["offline"] != true);
            whole.then_some(())
        },
    )
    .await;
}

/// Waits until every job has a complete batch newer than the one it shows now.
async fn wait_for_new_batches(api: &Api, within: Duration) {
    for job in JOBS {
        let latest = api.latest(job).await;
        let current = latest["batch"]["id"].as_str().map(str::to_owned);
        api.wait_for_latest(job, current.as_deref(), within).await;
    }
}

/// Stops the jobs, waits for data-streams to consume the whole stream, and checks it serves
/// every acknowledged article exactly once in whole batches, and that no reader ever saw a
/// partial or mixed page.
async fn assert_exactly_once(api: &Api, bus: &Bus, reader: &BatchReader) {
    for job in JOBS {
        let (status, body) = api.post_empty(&format!("/jobs/{job}/stop")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    wait_until_ingested(bus, INGEST_WITHIN).await;
    let report = audit(api, bus, None).await;
    eprintln!("{report}");
    report.assert_exactly_once();
    assert!(report.complete_batches >= 4 * JOBS.len(), "{report}");
    assert_reads_whole(reader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_killed_mid_ingest_and_brought_back_loses_and_duplicates_nothing() {
    let (mut system, api, bus) = cluster_system().await;
    let reader = BatchReader::start(api.base(), &JOBS);

    // The worst node to lose: the one leading the stream.
    let (leader, seq_at_kill) = wait_for(FAILOVER_WITHIN, "the stream's leader", || {
        leader_and_last_seq(&bus)
    })
    .await;
    let index = system
        .cluster()
        .index_of(&leader)
        .unwrap_or_else(|| panic!("leader {leader} is not a node name"));
    let killed = Instant::now();
    let killed_at = OffsetDateTime::now_utc();
    system.cluster().node(index).kill9();
    wait_for(
        FAILOVER_WITHIN,
        "a new stream leader to store messages",
        || async {
            let (new_leader, seq) = leader_and_last_seq(&bus).await?;
            (new_leader != leader && seq > seq_at_kill).then_some(())
        },
    )
    .await;
    wait_for_new_batches(&api, FAILOVER_WITHIN).await;
    let batch_after = killed.elapsed();
    wait_for_new_batches(&api, FAILOVER_WITHIN).await;
    // Ready again on two nodes: the consumer and the bucket watches lost with the leader are
    // rebuilt (a watch notices after two missed 5 s heartbeats), then readiness holds.
    api.wait_ready(FAILOVER_WITHIN).await;

    system.cluster().node(index).start_again().await;
    wait_stream_whole(&bus).await;
    wait_for_new_batches(&api, FAILOVER_WITHIN).await;

    // (Read once all three nodes are back.) When the first message after the kill was stored, by the server's own clock.
    let resumed = read_stream(&bus)
        .await
        .into_iter()
        .filter(|record| record.seq > seq_at_kill)
        .map(|record| record.published)
        .min()
        .expect("messages stored after the kill");
    eprintln!(
        "FIGURE cluster failover: leader {leader} killed; the first message stored {} ms later, a new batch of every job visible after {} ms",
        (resumed - killed_at).whole_milliseconds(),
        batch_after.as_millis()
    );
    assert_exactly_once(&api, &bus, &reader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_cluster_node_loses_and_duplicates_nothing() {
    let (mut system, api, bus) = cluster_system().await;
    let reader = BatchReader::start(api.base(), &JOBS);

    for index in 0..system.cluster().len() {
        wait_stream_whole(&bus).await;
        let stopped = Instant::now();
        system.cluster().node(index).stop().await;
        wait_for_new_batches(&api, FAILOVER_WITHIN).await;
        eprintln!(
            "FIGURE rolling restart: node n{} down; a new batch of every job after {} ms",
            index + 1,
            stopped.elapsed().as_millis()
        );
        system.cluster().node(index).start_again().await;
        wait_for_new_batches(&api, FAILOVER_WITHIN).await;
    }
    wait_stream_whole(&bus).await;

    assert_exactly_once(&api, &bus, &reader).await;
}
