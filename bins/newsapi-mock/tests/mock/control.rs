//! The control API's statistics and reset, and latency.

use std::time::{Duration, Instant};

use newsapi_mock::Config;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::Mock;

#[tokio::test]
async fn stats_count_v2_requests_by_status_and_path() {
    let mock = Mock::start().await;
    mock.queue_fault(json!({"kind": "rate_limited", "times": 1}))
        .await;
    mock.get("/v2/everything?q=ai").await;
    mock.get("/v2/everything?q=ai").await;
    mock.get_without_key("/v2/top-headlines?country=us").await;
    mock.get_without_key("/healthz").await;

    let stats = mock.stats().await;

    assert_eq!(stats["requests"], 3);
    assert_eq!(stats["by_status"], json!({"200": 1, "401": 1, "429": 1}));
    assert_eq!(
        stats["by_path"],
        json!({"/v2/everything": 2, "/v2/top-headlines": 1})
    );
    assert!(stats["last_request_at"].is_string());
}

#[tokio::test]
async fn stats_start_empty() {
    let mock = Mock::start().await;
    let stats = mock.stats().await;
    assert_eq!(stats["requests"], 0);
    assert!(stats["last_request_at"].is_null());
}

#[tokio::test]
async fn reset_clears_faults_and_stats() {
    let mock = Mock::start().await;
    mock.queue_fault(json!({"kind": "server_error"})).await;
    mock.get("/v2/everything?q=ai").await;

    let reset = mock.post("/__mock/reset", json!({})).await;

    assert_eq!(reset.status(), StatusCode::OK);
    assert_eq!(mock.stats().await["requests"], 0);
    assert_eq!(
        mock.get("/v2/everything?q=ai").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn queued_faults_can_be_listed() {
    let mock = Mock::start().await;
    mock.queue_fault(json!({"kind": "slow", "times": 3})).await;
    let (_, body) = crate::support::json(mock.get_without_key("/__mock/faults").await).await;
    assert_eq!(body["faults"], json!([{"kind": "slow", "remaining": 3}]));
}

#[tokio::test]
async fn latency_delays_every_v2_response() {
    let mock = Mock::with(Config {
        latency: Duration::from_millis(200),
        ..Config::default()
    })
    .await;
    let started = Instant::now();
    mock.get("/v2/everything?q=ai&pageSize=1").await;
    assert!(started.elapsed() >= Duration::from_millis(200));
}
