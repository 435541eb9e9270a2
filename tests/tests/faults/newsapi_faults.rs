//! A misbehaving NewsAPI: rate limits, server errors, timeouts, a closed port, malformed and
//! oversized bodies, a refused key and the plan's result cap; each run fails typed or waits,
//! and the job recovers.

use std::time::Duration;

use newsflow_tests::contract::{assert_error_info, id_of};
use newsflow_tests::faults_support::{spawn_worker_with, TimingProxy};
use newsflow_tests::{hold_for, wait_for, Api, Bus, System};
use serde_json::{json, Value};

use crate::{assert_whole, BATCH_WITHIN};

/// A system with one worker running job `id` (every second, 5 articles) whose first batch is
/// complete; returns the system and that batch's id.
async fn running_job(id: &str, worker_args: &[&str]) -> (System, String) {
    let system = System::builder()
        .workers(1)
        .worker_args(worker_args.iter().copied())
        .start()
        .await;
    let api = system.api();
    api.create_job_ok(&json!({"id":id,"params":{"q":"bitcoin"},"interval_secs":1,"page_size":5}))
        .await;
    let page = api.wait_for_latest(id, None, BATCH_WITHIN).await;
    let first = assert_whole(&page);
    (system, first)
}

/// Waits for a failed run of `job` with error `code`: its batch is listed as failed, the job's
/// `last_error` says so, a `failed` marker is on the stream, and the latest complete batch is
/// still served whole. Returns the failed batch's id.
async fn assert_failed_run(api: &Api, bus: &Bus, job: &str, code: &str) -> String {
    let failed = wait_for(
        BATCH_WITHIN,
        &format!("a run of {job} to fail with {code}"),
        || async {
            api.batches(job)
                .await
                .into_iter()
                .find(|b| b["status"] == "failed" && b["error"]["code"] == code)
        },
    )
    .await;
    let failed_id = id_of(&failed);
    assert_error_info(&failed["error"], "the failed batch's error");
    let job_now = api.job(job).await;
    assert_eq!(job_now["last_error"]["code"], code, "{job_now}");
    assert!(
        job_now["last_error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{job_now}"
    );
    let markers = bus
        .stream_messages(&format!("news.batches.{job}.{failed_id}"))
        .await;
    assert_eq!(markers.len(), 1, "one marker for the failed run");
    let marker: Value = serde_json::from_slice(&markers[0].payload).expect("a JSON marker");
    assert_eq!(marker["status"], "failed", "{marker}");
    assert_eq!(marker["error"]["code"], code, "{marker}");
    let page = api.latest(job).await;
    let latest = assert_whole(&page);
    assert!(
        latest < failed_id,
        "the previous complete batch stays the latest"
    );
    failed_id
}

/// After the fault is gone, the job completes a batch again and still reports the failure.
async fn assert_recovers(api: &Api, job: &str, failed: &str, code: &str) {
    let page = api.wait_for_latest(job, Some(failed), BATCH_WITHIN).await;
    assert_whole(&page);
    let job_now = api.job(job).await;
    assert_eq!(
        job_now["last_error"]["code"], code,
        "last_error is kept after a success: {job_now}"
    );
}

/// A system with no worker of its own, a timing proxy in front of the mock, and a worker
/// `timed` fetching through it with `overrides`.
async fn timed_worker(overrides: &[&str]) -> (System, TimingProxy, newsflow_tests::Proc) {
    let system = System::builder().workers(0).start().await;
    let mock = system.mock();
    let proxy = TimingProxy::start(mock.base().trim_start_matches("http://")).await;
    let base = proxy.base();
    let mut flags = vec!["--newsapi-url", base.as_str()];
    flags.extend_from_slice(overrides);
    let worker = spawn_worker_with(&system, "timed", &flags).await;
    (system, proxy, worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_fetch_waits_the_retry_after_before_asking_again() {
    let (system, proxy, _worker) = timed_worker(&[]).await;
    let api = system.api();
    system
        .mock()
        .inject_fault(&json!({"kind":"rate_limited","times":1,"retry_after_secs":2}))
        .await;

    api.create_job_ok(
        &json!({"id":"limited","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":5}),
    )
    .await;

    let page = api.wait_for_latest("limited", None, BATCH_WITHIN).await;
    assert_whole(&page);
    let gaps = proxy.gaps();
    let (status, gap) = gaps.first().copied().expect("two requests");
    assert_eq!(status, Some(429), "{gaps:?}");
    eprintln!("429 with Retry-After: 2 → next request after {gap:?}");
    assert!(gap >= Duration::from_secs(2), "asked again after {gap:?}");
    assert!(
        gap < Duration::from_millis(3500),
        "asked again after {gap:?}"
    );
    let job = api.job("limited").await;
    assert!(
        job["last_error"].is_null(),
        "a retried page is no failure: {job}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_longer_than_the_cap_is_waited_only_up_to_the_cap() {
    let (system, proxy, _worker) = timed_worker(&["--max-retry-after-secs", "1"]).await;
    let api = system.api();
    system
        .mock()
        .inject_fault(&json!({"kind":"rate_limited","times":1,"retry_after_secs":30}))
        .await;

    api.create_job_ok(
        &json!({"id":"capped","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":5}),
    )
    .await;

    let page = api.wait_for_latest("capped", None, BATCH_WITHIN).await;
    assert_whole(&page);
    let (status, gap) = proxy.gaps().first().copied().expect("two requests");
    assert_eq!(status, Some(429));
    eprintln!("429 with Retry-After: 30 and a 1 s cap → next request after {gap:?}");
    assert!(gap >= Duration::from_secs(1), "asked again after {gap:?}");
    assert!(
        gap < Duration::from_millis(2500),
        "asked again after {gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_capped_exponential_backoff_until_the_page_comes() {
    let (system, proxy, _worker) = timed_worker(&[
        "--retry-base-ms",
        "400",
        "--retry-max-ms",
        "1000",
        "--fetch-retries",
        "5",
    ])
    .await;
    let api = system.api();
    let mock = system.mock();
    mock.inject_fault(&json!({"kind":"server_error","times":3}))
        .await;
    mock.inject_fault(&json!({"kind":"unavailable","times":2}))
        .await;

    api.create_job_ok(
        &json!({"id":"flaky","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":5}),
    )
    .await;

    let page = api.wait_for_latest("flaky", None, BATCH_WITHIN).await;
    assert_whole(&page);
    let exchanges = proxy.exchanges();
    let statuses: Vec<Option<u16>> = exchanges.iter().map(|e| e.status).collect();
    assert_eq!(
        statuses,
        [500, 500, 500, 503, 503, 200].map(Some),
        "one page: five failures, then the page"
    );
    let gaps = proxy.gaps();
    eprintln!("backoff gaps: {gaps:?}");
    // Retry n waits a jittered [ceiling/2, ceiling], ceiling = min(400 ms * 2^n, 1000 ms).
    let slack = Duration::from_millis(400);
    for (n, ceiling_ms) in [400u64, 800, 1000, 1000, 1000].into_iter().enumerate() {
        let ceiling = Duration::from_millis(ceiling_ms);
        let gap = gaps[n].1;
        assert!(
            gap >= ceiling / 2,
            "retry {n} came after {gap:?}, before half its ceiling {ceiling:?}"
        );
        assert!(
            gap <= ceiling + slack,
            "retry {n} came after {gap:?}, past its ceiling {ceiling:?}"
        );
    }
    let job = api.job("flaky").await;
    assert!(job["last_error"].is_null(), "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_past_the_retries_fail_the_run_with_a_failed_marker_and_keep_the_last_batch()
{
    let (system, _) = running_job("broken", &[]).await;
    let api = system.api();
    let bus = system.bus().await;
    let mock = system.mock();

    mock.inject_fault(&json!({"kind":"server_error"})).await;
    let failed = assert_failed_run(&api, &bus, "broken", "upstream_error").await;
    mock.clear_faults().await;

    assert_recovers(&api, "broken", &failed, "upstream_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_slower_than_the_timeout_fails_the_run_as_a_timeout_and_the_job_recovers() {
    let (system, _) = running_job(
        "sluggish",
        &["--fetch-timeout-ms", "500", "--fetch-retries", "1"],
    )
    .await;
    let api = system.api();
    let bus = system.bus().await;
    let mock = system.mock();

    mock.inject_fault(&json!({"kind":"slow","delay_ms":3000}))
        .await;
    let failed = assert_failed_run(&api, &bus, "sluggish", "timeout").await;
    mock.clear_faults().await;

    assert_recovers(&api, "sluggish", &failed, "timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_api_port_fails_the_run_as_a_connection_failure_and_the_job_recovers() {
    let (mut system, _) = running_job("unreachable", &[]).await;
    let api = system.api();
    let bus = system.bus().await;

    system.stop_mock().await;
    let failed = assert_failed_run(&api, &bus, "unreachable", "connection_failed").await;
    system.start_mock().await;

    assert_recovers(&api, "unreachable", &failed, "connection_failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_api_body_fails_the_run_and_the_job_recovers() {
    let (system, _) = running_job("garbled", &[]).await;
    let api = system.api();
    let bus = system.bus().await;
    let mock = system.mock();

    mock.inject_fault(&json!({"kind":"malformed"})).await;
    let failed = assert_failed_run(&api, &bus, "garbled", "malformed_response").await;
    mock.clear_faults().await;

    assert_recovers(&api, "garbled", &failed, "malformed_response").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_body_over_the_size_cap_fails_the_run_and_the_job_recovers() {
    let (system, _) = running_job("bloated", &["--max-response-bytes", "32768"]).await;
    let api = system.api();
    let bus = system.bus().await;
    let mock = system.mock();

    mock.inject_fault(&json!({"kind":"oversized","bytes":200_000}))
        .await;
    let failed = assert_failed_run(&api, &bus, "bloated", "response_too_large").await;
    mock.clear_faults().await;

    assert_recovers(&api, "bloated", &failed, "response_too_large").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_api_key_is_recorded_and_the_api_is_not_hammered() {
    let (system, _) = running_job("locked", &[]).await;
    let api = system.api();
    let bus = system.bus().await;
    let mock = system.mock();

    mock.inject_fault(&json!({"kind":"key_invalid"})).await;
    assert_failed_run(&api, &bus, "locked", "api_key_invalid").await;

    let refused = mock.count_status(401).await;
    let requests = mock.stats().await["requests"].as_u64().unwrap_or(0);
    // Eight intervals of a job that runs every second.
    hold_for(
        Duration::from_secs(8),
        "at most one more request to the API",
        || async {
            let now = mock.stats().await["requests"].as_u64().unwrap_or(0);
            (now > requests + 1).then(|| format!("{} more requests", now - requests))
        },
    )
    .await;
    assert!(refused >= 1);
    let job = api.job("locked").await;
    assert_eq!(job["last_error"]["code"], "api_key_invalid", "{job}");
    assert_eq!(job["state"], "running", "{job}");
    assert_whole(&api.latest("locked").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaching_the_plans_result_cap_ends_the_batch_as_complete_not_failed() {
    let system = System::builder()
        .workers(1)
        .mock_args(["--max-results", "40"])
        .start()
        .await;
    let api = system.api();

    api.create_job_ok(&json!({
        "id":"capped-results","params":{"q":"bitcoin"},"interval_secs":3600,"max_pages":5,"page_size":20
    }))
    .await;

    let page = api
        .wait_for_latest("capped-results", None, BATCH_WITHIN)
        .await;
    assert_whole(&page);
    assert_eq!(page["batch"]["article_count"], 40);
    assert!(system.mock().count_status(426).await >= 1);
    let job = api.job("capped-results").await;
    assert!(job["last_error"].is_null(), "{job}");
    let batches = api.batches("capped-results").await;
    assert!(
        batches.iter().all(|b| b["status"] == "complete"),
        "{batches:?}"
    );
}
