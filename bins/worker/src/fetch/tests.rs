//! The client against the real mock server; `wire` covers what the mock cannot show.

use std::time::{Duration, Instant};

use newsapi_mock::{FaultKind, FaultSpec};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::*;

mod wire;

const KEY: &str = "test-key-distinctive-7f3a";

struct Mock {
    url: Url,
    _stop: DropGuard,
}

impl Mock {
    async fn start(faults: Vec<FaultSpec>) -> Self {
        Self::with(newsapi_mock::Config {
            api_key: Some(KEY.to_owned()),
            faults,
            ..newsapi_mock::Config::default()
        })
        .await
    }

    async fn with(config: newsapi_mock::Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let url = Url::parse(&format!(
            "http://{}",
            listener.local_addr().expect("has an address")
        ))
        .expect("valid URL");
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(newsapi_mock::run(config, listener, async move {
            stopped.cancelled().await
        }));
        Self {
            url,
            _stop: stop.drop_guard(),
        }
    }

    /// `GET /__mock/stats`: `requests` and `by_status`.
    async fn stats(&self) -> serde_json::Value {
        let url = format!("{}__mock/stats", self.url);
        let body = reqwest::get(url)
            .await
            .expect("stats answer")
            .bytes()
            .await
            .expect("stats body");
        serde_json::from_slice(&body).expect("stats JSON")
    }

    fn client(&self, settings: FetchSettings) -> NewsClient {
        NewsClient::new(&self.url, Some(Secret::new(KEY)), settings).expect("client")
    }
}

fn fault(kind: FaultKind, times: Option<u32>) -> FaultSpec {
    FaultSpec { kind, times }
}

fn settings() -> FetchSettings {
    FetchSettings {
        timeout: Duration::from_secs(5),
        retries: 4,
        retry_base: Duration::from_millis(10),
        retry_max: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(5),
        max_response_bytes: 4 * 1024 * 1024,
    }
}

fn query() -> NewsQuery {
    let params = json!({"q": "bitcoin", "language": "en"});
    NewsQuery::parse(
        newsflow_core::Endpoint::Everything,
        params.as_object().expect("an object"),
    )
    .expect("valid query")
}

/// A gate that lets every request through.
async fn admit_all() -> Result<(), FetchError> {
    Ok(())
}

fn page_of(outcome: Result<PageOutcome, FetchError>) -> newsflow_core::newsapi::NewsPage {
    match outcome {
        Ok(PageOutcome::Page(page)) => page,
        other => panic!("expected a page, got {other:?}"),
    }
}

fn error_of(outcome: Result<PageOutcome, FetchError>) -> FetchError {
    let error = match outcome {
        Err(error) => error,
        Ok(other) => panic!("expected an error, got {other:?}"),
    };
    let info = error.to_info();
    for text in [
        error.to_string(),
        format!("{error:?}"),
        info.message,
        info.code,
    ] {
        assert!(!text.contains(KEY), "the key leaked into {text:?}");
    }
    error
}

#[tokio::test]
async fn a_page_parses_into_raw_articles() {
    let mock = Mock::start(Vec::new()).await;

    let page = page_of(
        mock.client(settings())
            .fetch_page(&query(), 1, 5, admit_all)
            .await,
    );

    assert_eq!(page.articles.len(), 5);
    assert!(page.total_results >= 5);
    assert!(page.articles.iter().all(|a| a.url.is_some()));
}

#[tokio::test]
async fn a_rate_limit_waits_for_retry_after_then_succeeds() {
    let mock = Mock::start(vec![fault(
        FaultKind::RateLimited {
            retry_after_secs: 1,
        },
        Some(1),
    )])
    .await;
    let started = Instant::now();

    page_of(
        mock.client(settings())
            .fetch_page(&query(), 1, 5, admit_all)
            .await,
    );

    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    let stats = mock.stats().await;
    assert_eq!(stats["requests"], 2);
    assert_eq!(stats["by_status"]["429"], 1);
}

#[tokio::test]
async fn a_long_retry_after_is_capped() {
    let mock = Mock::start(vec![fault(
        FaultKind::RateLimited {
            retry_after_secs: 600,
        },
        Some(1),
    )])
    .await;
    let settings = FetchSettings {
        max_retry_after: Duration::from_millis(200),
        ..settings()
    };
    let started = Instant::now();

    page_of(
        mock.client(settings)
            .fetch_page(&query(), 1, 5, admit_all)
            .await,
    );

    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_then_succeed() {
    let mock = Mock::start(vec![
        fault(FaultKind::ServerError, Some(2)),
        fault(FaultKind::Unavailable, Some(1)),
    ])
    .await;
    let started = Instant::now();

    page_of(
        mock.client(settings())
            .fetch_page(&query(), 1, 5, admit_all)
            .await,
    );

    // Equal jitter: retries wait at least 5, 10 and 20 ms.
    assert!(started.elapsed() >= Duration::from_millis(35));
    let stats = mock.stats().await;
    assert_eq!(stats["requests"], 4);
    assert_eq!(stats["by_status"]["500"], 2);
    assert_eq!(stats["by_status"]["503"], 1);
}

#[tokio::test]
async fn server_errors_fail_as_upstream_error_once_retries_run_out() {
    let mock = Mock::start(vec![fault(FaultKind::ServerError, None)]).await;
    let settings = FetchSettings {
        retries: 2,
        ..settings()
    };

    let error = error_of(
        mock.client(settings)
            .fetch_page(&query(), 1, 5, admit_all)
            .await,
    );

    assert_eq!(error.to_info().code, "upstream_error");
    assert_eq!(mock.stats().await["requests"], 3);
}

#[tokio::test]
async fn a_rejected_key_is_never_retried() {
    let mock = Mock::start(Vec::new()).await;
    let client = NewsClient::new(
        &mock.url,
        Some(Secret::new("wrong-key-distinctive")),
        settings(),
    )
    .expect("client");

    let error = error_of(client.fetch_page(&query(), 1, 5, admit_all).await);

    assert!(error.is_key_failure());
    assert_eq!(error.to_info().code, "api_key_invalid");
    assert!(!error.to_string().contains("wrong-key-distinctive"));
    let stats = mock.stats().await;
    assert_eq!(stats["requests"], 1);
    assert_eq!(stats["by_status"]["401"], 1);
}

#[tokio::test]
async fn a_missing_key_is_a_key_failure() {
    let mock = Mock::start(Vec::new()).await;
    let client = NewsClient::new(&mock.url, None, settings()).expect("client");

    let error = error_of(client.fetch_page(&query(), 1, 5, admit_all).await);

    assert!(error.is_key_failure());
    assert_eq!(error.to_info().code, "api_key_missing");
    assert_eq!(mock.stats().await["requests"], 1);
}

#[tokio::test]
async fn other_client_errors_are_never_retried() {
    let mock = Mock::start(vec![fault(FaultKind::BadRequest, None)]).await;

    let error = error_of(
        mock.client(settings())
            .fetch_page(&query(), 1, 5, admit_all)
            .await,
    );

    assert_eq!(error.to_info().code, "parameter_invalid");
    assert_eq!(mock.stats().await["requests"], 1);
}

#[tokio::test]
async fn an_exhausted_quota_is_a_key_failure_never_retried() {
    let mock = Mock::start(vec![fault(FaultKind::KeyExhausted, None)]).await;

    let error = error_of(
        mock.client(settings())
            .fetch_page(&query(), 1, 5, admit_all)
            .await,
    );

    assert!(error.is_key_failure());
    assert_eq!(error.to_info().code, "api_key_exhausted");
    assert_eq!(mock.stats().await["requests"], 1);
}

#[tokio::test]
async fn malformed_json_fails_as_malformed_response_after_retries() {
    let mock = Mock::start(vec![fault(FaultKind::Malformed, None)]).await;
    let settings = FetchSettings {
        retries: 2,
        ..settings()
    };

    let error = error_of(
        mock.client(settings)
            .fetch_page(&query(), 1, 5, admit_all)
            .await,
    );

    assert_eq!(error.to_info().code, "malformed_response");
    assert_eq!(mock.stats().await["requests"], 3);
}

#[tokio::test]
async fn an_oversized_body_fails_as_response_too_large() {
    let mock = Mock::start(vec![fault(FaultKind::Oversized { bytes: 300_000 }, None)]).await;
    let settings = FetchSettings {
        max_response_bytes: 64 * 1024,
        ..settings()
    };

    let error = error_of(
        mock.client(settings)
            .fetch_page(&query(), 1, 5, admit_all)
            .await,
    );

    assert_eq!(error.to_info().code, "response_too_large");
    assert_eq!(mock.stats().await["requests"], 1, "not retried");
}

#[tokio::test]
async fn a_slow_answer_fails_as_timeout() {
    let mock = Mock::start(vec![fault(
        FaultKind::Slow {
            delay: Duration::from_secs(30),
        },
        None,
    )])
    .await;
    let settings = FetchSettings {
        timeout: Duration::from_millis(200),
        retries: 1,
        ..settings()
    };
    let started = Instant::now();

    let error = error_of(
        mock.client(settings)
            .fetch_page(&query(), 1, 5, admit_all)
            .await,
    );

    assert_eq!(error.to_info().code, "timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_refused_connection_fails_as_connection_failed_without_the_url() {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let url = Url::parse(&format!("http://{}", closed.local_addr().expect("address")))
        .expect("valid URL");
    drop(closed);
    let client = NewsClient::new(
        &url,
        Some(Secret::new(KEY)),
        FetchSettings {
            retries: 1,
            ..settings()
        },
    )
    .expect("client");

    let error = error_of(client.fetch_page(&query(), 1, 5, admit_all).await);

    assert_eq!(error.to_info().code, "connection_failed");
    let text = error.to_string();
    assert!(
        !text.contains("http://") && !text.contains("bitcoin"),
        "{text}"
    );
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    let mock = Mock::start(vec![fault(FaultKind::Drop, Some(1))]).await;

    page_of(
        mock.client(settings())
            .fetch_page(&query(), 1, 5, admit_all)
            .await,
    );

    assert_eq!(mock.stats().await["requests"], 2);
}

#[tokio::test]
async fn asking_past_the_plans_cap_is_the_end_of_results() {
    let mock = Mock::start(Vec::new()).await;

    let outcome = mock
        .client(settings())
        .fetch_page(&query(), 2, 100, admit_all)
        .await;

    assert!(
        matches!(outcome, Ok(PageOutcome::EndOfResults)),
        "{outcome:?}"
    );
    assert_eq!(mock.stats().await["by_status"]["426"], 1);
}

#[tokio::test]
async fn after_a_key_failure_other_jobs_do_not_call_the_api() {
    let mock = Mock::start(vec![fault(FaultKind::KeyInvalid, Some(1))]).await;
    let guarded = GuardedClient::new(mock.client(settings()), Breaker::default(), 4, None);
    let spec = newsflow_core::JobSpec::from_create_request(&json!({
        "id": "j", "endpoint": "everything", "params": {"q": "bitcoin"}, "page_size": 5
    }))
    .expect("valid spec");
    let sent = std::sync::atomic::AtomicU32::new(0);
    let request = || PageRequest {
        spec: &spec,
        page: 1,
        sent: &sent,
    };

    let first = error_of(guarded.fetch(request()).await);
    let second = error_of(guarded.fetch(request()).await);

    assert_eq!(first, second);
    assert_eq!(mock.stats().await["requests"], 1);
}
