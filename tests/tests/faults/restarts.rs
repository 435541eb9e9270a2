//! Restarts of data-streams or of a worker while the other stays up: each job stays on
//! exactly one worker.

use std::time::{Duration, Instant};

use newsflow_tests::contract::{id_of, owner_of};
use newsflow_tests::faults_support::{owner, wait_for_owner, HeartbeatLog};
use newsflow_tests::{hold_for, wait_for, System};
use serde_json::json;

use crate::{assert_whole, BATCH_WITHIN, MOVE_WITHIN, WORKER_TIMEOUT};

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
