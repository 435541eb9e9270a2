//! A stalled store is seen and ends: with every flush held (the test hook standing in for
//! sled's flush deadlock), `/readyz` answers 503 naming the store, the stall is logged with
//! what waits on it, the process exits with status 3, and after a restart nothing that was
//! acknowledged is lost and what was not comes back whole.

use std::time::Duration;

use newsflow_core::BatchId;
use newsflow_tests::{wait_for, StatusCode, System};
use serde_json::json;

use super::article;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_flush_makes_readyz_503_is_logged_exits_3_and_loses_nothing() {
    let mut system = System::builder().without_data_streams().start().await;
    let hold = system.dir().join("hold-flushes");
    let hold_arg = hold.display().to_string();
    system
        .start_data_streams_with(&[
            "--store-stall-secs",
            "2",
            "--test-hold-flushes-while",
            &hold_arg,
        ])
        .await;
    let api = system.api();
    api.create_job_ok(&json!({"id":"kept","params":{"q":"kept"},"interval_secs":3600}))
        .await;
    let bus = system.bus().await;
    let before = BatchId::generate();
    let articles: Vec<_> = (0..10).map(|i| article("kept", before, i, "")).collect();
    bus.publish_complete_batch(&articles).await;
    api.wait_for_latest("kept", None, Duration::from_secs(20))
        .await;

    std::fs::write(&hold, b"").expect("creating the hold file");
    // A write now waits on a flush that does not come.
    let hung = tokio::spawn({
        let api = api.clone();
        async move {
            api.create_job(&json!({"id":"hung","params":{"q":"hung"},"interval_secs":3600}))
                .await
        }
    });
    let during = BatchId::generate();
    let articles: Vec<_> = (0..10).map(|i| article("kept", during, i, "")).collect();
    bus.publish_complete_batch(&articles).await;

    let reason = wait_for(
        Duration::from_secs(10),
        "/readyz to say the store stalled",
        || {
            let api = api.clone();
            async move {
                let (status, body) = api.get("/readyz").await;
                (status == StatusCode::SERVICE_UNAVAILABLE).then_some(body)
            }
        },
    )
    .await;
    assert_eq!(reason["error"]["code"], "not_ready", "{reason}");
    let message = reason["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("store stalled"), "{reason}");
    assert_eq!(reason["store_open"], false, "{reason}");

    let status = wait_for(Duration::from_secs(10), "data-streams to exit", || {
        let exited = system.data_streams_mut().try_exit();
        async move { exited }
    })
    .await;
    assert_eq!(
        status.code(),
        Some(3),
        "a stall ends the process with status 3"
    );
    let logs = system.data_streams().logs();
    assert!(
        logs.contains("store stalled") && logs.contains("holding up"),
        "the stall is logged with what waits on it:\n{logs}"
    );
    let _ = hung.await;

    std::fs::remove_file(&hold).expect("removing the hold file");
    system.kill_data_streams();
    system.start_data_streams().await;
    let api = system.api();
    let kept = api.job("kept").await;
    assert_eq!(kept["state"], "running");
    // The batch published during the stall was never acknowledged: it is redelivered.
    let latest = api
        .wait_for_latest("kept", Some(&before.to_string()), Duration::from_secs(30))
        .await;
    assert_eq!(latest["batch"]["id"], during.to_string().as_str());
    assert_eq!(latest["articles"].as_array().map(Vec::len), Some(10));
    let (status, job) = api.get("/jobs/hung").await;
    assert!(
        status == StatusCode::NOT_FOUND || job["state"] == "running",
        "the unanswered create is absent or whole: {status} {job}"
    );
}
