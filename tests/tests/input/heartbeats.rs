//! Garbage heartbeats: counted, logged and ignored, while data-streams keeps serving.

use std::time::Duration;

use newsflow_tests::{hold_for, wait_for, Api, StatusCode, System};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_heartbeats_are_counted_and_ignored_and_data_streams_keeps_serving() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    let bus = system.bus().await;
    api.create_job_ok(
        &json!({"id":"steady","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":5}),
    )
    .await;
    let before = invalid_heartbeats(&api).await;
    let garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"not json".to_vec(),
        vec![0xff, 0x00, 0xfe],
        b"null".to_vec(),
        b"[]".to_vec(),
        b"{}".to_vec(),
        br#"{"worker_id":7,"jobs":[],"at":"2026-11-20T08:00:00Z"}"#.to_vec(),
        br#"{"worker_id":"w.x","jobs":[],"at":"2026-11-20T08:00:00Z"}"#.to_vec(),
        br#"{"worker_id":"","jobs":[],"at":"2026-11-20T08:00:00Z"}"#.to_vec(),
        br#"{"worker_id":"w","jobs":["Bad Id"],"at":"2026-11-20T08:00:00Z"}"#.to_vec(),
        br#"{"worker_id":"w","jobs":"steady","at":"2026-11-20T08:00:00Z"}"#.to_vec(),
        br#"{"worker_id":"w","jobs":[],"at":"yesterday"}"#.to_vec(),
        br#"{"worker_id":"w","jobs":[]}"#.to_vec(),
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        format!(
            r#"{{"worker_id":"w","jobs":[{}],"at":"2026-11-20T08:00:00Z"}}"#,
            vec!["\"Bad Id\""; 40_000].join(",")
        )
        .into_bytes(),
    ];
    for payload in &garbage {
        bus.client()
            .publish("news.ctl.heartbeat", payload.clone().into())
            .await
            .expect("publishes");
    }
    bus.flush().await;

    let want = before + garbage.len() as f64;
    wait_for(
        Duration::from_secs(10),
        "every garbage heartbeat to be counted",
        || async { (invalid_heartbeats(&api).await >= want).then_some(()) },
    )
    .await;
    // Only those: the real worker's heartbeats keep parsing.
    hold_for(
        Duration::from_secs(2),
        "no other heartbeat counted as invalid",
        || async {
            let now = invalid_heartbeats(&api).await;
            (now != want).then(|| format!("{now} invalid heartbeats, expected {want}"))
        },
    )
    .await;
    let (status, _) = api.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let job = api.job("steady").await;
    assert_eq!(
        job["worker"]["id"], "worker-1",
        "the real owner is kept: {job}"
    );
    assert!(system.data_streams().logs().contains("invalid heartbeat"));
    eprintln!("garbage heartbeats counted: {}", garbage.len());
}

async fn invalid_heartbeats(api: &Api) -> f64 {
    api.metric("newsflow_invalid_heartbeats_total")
        .await
        .unwrap_or_else(|| panic!("newsflow_invalid_heartbeats_total missing from GET /metrics"))
}
