//! Each fault kind, its counting and its order.

use std::time::{Duration, Instant};

use newsapi_mock::Config;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{assert_error, json, Mock};

const PATH: &str = "/v2/everything?q=ai&pageSize=10";

#[tokio::test]
async fn rate_limited_is_429_with_retry_after() {
    let mock = Mock::start().await;
    mock.queue_fault(json!({"kind": "rate_limited", "times": 1, "retry_after_secs": 7}))
        .await;
    let response = mock.get(PATH).await;
    assert_eq!(response.headers()[RETRY_AFTER], "7");
    let message = assert_error(response, StatusCode::TOO_MANY_REQUESTS, "rateLimited").await;
    assert!(message.starts_with("You have made too many requests recently."));
}

#[tokio::test]
async fn rate_limited_defaults_to_retry_after_one_second() {
    let mock = Mock::start().await;
    mock.queue_fault(json!({"kind": "rate_limited"})).await;
    assert_eq!(mock.get(PATH).await.headers()[RETRY_AFTER], "1");
}

#[tokio::test]
async fn key_exhausted_is_429_api_key_exhausted() {
    let mock = Mock::start().await;
    mock.queue_fault(json!({"kind": "key_exhausted"})).await;
    assert_error(
        mock.get(PATH).await,
        StatusCode::TOO_MANY_REQUESTS,
        "apiKeyExhausted",
    )
    .await;
}

#[tokio::test]
async fn server_error_is_500_unexpected_error() {
    let mock = Mock::start().await;
    mock.queue_fault(json!({"kind": "server_error"})).await;
    let message = assert_error(
        mock.get(PATH).await,
        StatusCode::INTERNAL_SERVER_ERROR,
        "unexpectedError",
    )
    .await;
    assert!(message.starts_with("This shouldn't happen"));
}

#[tokio::test]
async fn unavailable_is_503_with_an_html_body() {
    let mock = Mock::start().await;
    mock.queue_fault(json!({"kind": "unavailable"})).await;
    let response = mock.get(PATH).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[CONTENT_TYPE], "text/html");
    let body = response.text().await.unwrap();
    assert!(body.contains("<html>"));
    assert!(serde_json::from_str::<Value>(&body).is_err());
}

#[tokio::test]
async fn slow_answers_normally_after_its_delay() {
    let mock = Mock::start().await;
    mock.queue_fault(json!({"kind": "slow", "delay_ms": 300}))
        .await;
    let started = Instant::now();
    let (status, body) = mock.get_json(PATH).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["articles"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn malformed_is_200_json_that_does_not_parse() {
    let mock = Mock::start().await;
    mock.queue_fault(json!({"kind": "malformed"})).await;
    let response = mock.get(PATH).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body = response.bytes().await.unwrap();
    assert!(!body.is_empty());
    assert!(serde_json::from_slice::<Value>(&body).is_err());
}

#[tokio::test]
async fn oversized_is_valid_json_larger_than_asked() {
    let mock = Mock::start().await;
    mock.queue_fault(json!({"kind": "oversized", "bytes": 200_000}))
        .await;
    let response = mock.get(PATH).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.bytes().await.unwrap();
    assert!(body.len() > 200_000, "{}", body.len());
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["status"], "ok");
    assert!(value["articles"].as_array().unwrap().len() > 100);
}

#[tokio::test]
async fn oversized_defaults_to_more_than_eight_mebibytes() {
    let mock = Mock::start().await;
    mock.queue_fault(json!({"kind": "oversized"})).await;
    let body = mock.get(PATH).await.bytes().await.unwrap();
    assert!(body.len() > 8 * 1024 * 1024);
}

#[tokio::test]
async fn key_invalid_is_401_even_with_the_right_key() {
    let mock = Mock::start().await;
    mock.queue_fault(json!({"kind": "key_invalid"})).await;
    assert_error(
        mock.get(PATH).await,
        StatusCode::UNAUTHORIZED,
        "apiKeyInvalid",
    )
    .await;
}

#[tokio::test]
async fn bad_request_is_400_parameter_invalid() {
    let mock = Mock::start().await;
    mock.queue_fault(json!({"kind": "bad_request"})).await;
    assert_error(
        mock.get(PATH).await,
        StatusCode::BAD_REQUEST,
        "parameterInvalid",
    )
    .await;
}

#[tokio::test]
async fn drop_closes_the_connection_without_an_answer() {
    let mock = Mock::start().await;
    mock.queue_fault(json!({"kind": "drop", "times": 1})).await;
    let outcome = reqwest::Client::new()
        .get(mock.url(PATH))
        .header("X-Api-Key", crate::support::KEY)
        .send()
        .await;
    let error = outcome.expect_err("a dropped connection must not produce a response");
    assert!(!error.is_status());
    assert_eq!(mock.get(PATH).await.status(), StatusCode::OK);
    assert_eq!(mock.stats().await["by_status"]["dropped"], 1);
}

#[tokio::test]
async fn wrong_shape_is_200_json_that_is_not_newsapi() {
    let mock = Mock::start().await;
    mock.queue_fault(json!({"kind": "wrong_shape"})).await;
    let (status, body) = mock.get_json(PATH).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["articles"], "nope");
}

#[tokio::test]
async fn fault_applies_to_exactly_its_times_then_answers_resume() {
    let mock = Mock::start().await;
    mock.queue_fault(json!({"kind": "server_error", "times": 2}))
        .await;
    let statuses = [
        mock.get(PATH).await.status(),
        mock.get(PATH).await.status(),
        mock.get(PATH).await.status(),
    ];
    assert_eq!(
        statuses,
        [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::OK
        ]
    );
}

#[tokio::test]
async fn faults_apply_in_the_order_they_were_queued() {
    let mock = Mock::start().await;
    mock.queue_fault(json!({"kind": "rate_limited", "times": 1}))
        .await;
    mock.queue_fault(json!({"kind": "unavailable", "times": 1}))
        .await;
    assert_eq!(mock.get(PATH).await.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        mock.get(PATH).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(mock.get(PATH).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn fault_without_times_lasts_until_cleared() {
    let mock = Mock::start().await;
    mock.queue_fault(json!({"kind": "server_error"})).await;
    for _ in 0..5 {
        assert_eq!(
            mock.get(PATH).await.status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    let cleared = reqwest::Client::new()
        .delete(mock.url("/__mock/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(json(cleared).await.1["cleared"], 1);
    assert_eq!(mock.get(PATH).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn faults_from_config_apply_from_the_first_request() {
    let mock = Mock::with(Config {
        faults: vec!["key_exhausted:1".parse().unwrap()],
        ..Config::default()
    })
    .await;
    assert_eq!(mock.get(PATH).await.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(mock.get(PATH).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_fault_kind_is_400_naming_the_known_kinds() {
    let mock = Mock::start().await;
    let response = mock.post("/__mock/faults", json!({"kind": "teapot"})).await;
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("teapot") && message.contains("rate_limited"),
        "{message}"
    );
}

#[tokio::test]
async fn queueing_a_fault_reports_the_queue_length() {
    let mock = Mock::start().await;
    let first = mock
        .post("/__mock/faults", json!({"kind": "drop", "times": 1}))
        .await;
    let second = mock
        .post("/__mock/faults", json!({"kind": "slow", "times": 1}))
        .await;
    assert_eq!(json(first).await.1["queued"], 1);
    assert_eq!(json(second).await.1["queued"], 2);
}
