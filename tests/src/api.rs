//! `Api`: an HTTP client of data-streams speaking the contract's routes, returning status and
//! JSON so tests can assert on both, plus typed helpers for the common reads.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::poll::wait_for;

/// A client of one data-streams process.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Api {
    /// A client of `http://<addr>`.
    pub fn new(addr: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap_or_else(|e| panic!("building an HTTP client: {e}"));
        Self {
            base: format!("http://{addr}"),
            http,
            token: None,
        }
    }

    /// The same client sending `Authorization: Bearer <token>`.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The same client sending no token.
    pub fn without_token(mut self) -> Self {
        self.token = None;
        self
    }

    /// The bearer token it sends, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// `http://host:port`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request; returns the status and the body as JSON (`Null` when empty, a JSON
    /// string when the body is not JSON).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}"));
        (status, parse_body(&text))
    }

    /// `POST /jobs`, or `None` when no answer came (data-streams killed mid-request).
    pub async fn try_create_job(&self, body: &Value) -> Option<StatusCode> {
        let mut request = self.http.post(format!("{}/jobs", self.base)).json(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request.send().await.ok().map(|response| response.status())
    }

    /// Sends raw bytes with a content type (for malformed-body tests).
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (status, parse_body(&text))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    /// `GET path` and the raw text (for `/metrics`).
    pub async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status();
        (status, response.text().await.unwrap_or_default())
    }

    /// The value of the unlabelled sample `name` in `GET /metrics`, `None` when it is absent.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (status, text) = self.get_text("/metrics").await;
        assert!(status.is_success(), "GET /metrics: {status}");
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (key, value) = line.split_once(' ')?;
                (key == name).then(|| value.trim().parse().ok()).flatten()
            })
    }

    /// A counter or gauge of `GET /metrics` as a whole number, 0 before it is first counted.
    pub async fn counter(&self, name: &str) -> u64 {
        self.metric(name).await.map_or(0, |value| value as u64)
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(body)).await
    }

    /// `POST path` with no body.
    pub async fn post_empty(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::POST, path, None).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::DELETE, path, None).await
    }

    /// `POST /jobs`.
    pub async fn create_job(&self, body: &Value) -> (StatusCode, Value) {
        self.post("/jobs", body).await
    }

    /// `POST /jobs`, asserting 201; returns the job.
    pub async fn create_job_ok(&self, body: &Value) -> Value {
        let (status, job) = self.create_job(body).await;
        assert_eq!(status, StatusCode::CREATED, "POST /jobs {body}: {job}");
        job
    }

    /// `GET /jobs/{id}`, asserting 200.
    pub async fn job(&self, id: &str) -> Value {
        self.ok(&format!("/jobs/{id}")).await
    }

    /// `GET /jobs/{id}/articles`, asserting 200: the latest complete batch.
    pub async fn latest(&self, id: &str) -> Value {
        self.ok(&format!("/jobs/{id}/articles?limit=1000")).await
    }

    /// `GET /jobs/{id}/batches`, asserting 200: the batches, newest first.
    pub async fn batches(&self, id: &str) -> Vec<Value> {
        let body = self.ok(&format!("/jobs/{id}/batches?limit=1000")).await;
        array(&body, "batches")
    }

    /// Every article of one batch, following `next_cursor` with pages of `limit`.
    pub async fn batch_articles(&self, job: &str, batch: &str, limit: usize) -> Vec<Value> {
        self.collect_pages(
            &format!("/jobs/{job}/batches/{batch}/articles"),
            "articles",
            limit,
        )
        .await
    }

    /// Every item of a paged list under `key`, following `next_cursor` with pages of `limit`.
    /// `path` may already carry query parameters. Panics on a page that is not 200, a page
    /// larger than `limit`, or more than 10 000 pages.
    pub async fn collect_pages(&self, path: &str, key: &str, limit: usize) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let url = match &cursor {
                None => format!("{path}{sep}limit={limit}"),
                Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            };
            let page = self.ok(&url).await;
            let got = array(&page, key);
            assert!(
                got.len() <= limit,
                "GET {url}: {} items > limit {limit}",
                got.len()
            );
            items.extend(got);
            match page.get("next_cursor") {
                Some(Value::String(next)) => cursor = Some(next.clone()),
                Some(Value::Null) => return items,
                other => panic!("GET {url}: next_cursor must be a string or null, got {other:?}"),
            }
        }
        panic!("GET {path}: more than 10 000 pages")
    }

    /// `GET path`, asserting 200; returns the body.
    pub async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// Waits until the job's latest complete batch is newer than `after` (any batch when
    /// `None`) and returns the `GET /jobs/{id}/articles` body.
    pub async fn wait_for_latest(&self, job: &str, after: Option<&str>, within: Duration) -> Value {
        let what = match after {
            Some(after) => format!("job {job} to complete a batch newer than {after}"),
            None => format!("job {job} to complete a batch"),
        };
        wait_for(within, &what, || async {
            let body = self.latest(job).await;
            let id = body["batch"]["id"].as_str()?.to_owned();
            match after {
                Some(after) if id.as_str() <= after => None,
                _ => Some(body),
            }
        })
        .await
    }

    /// Waits until the job's `next_run_at` lies more than `ahead` in the future, and returns
    /// the job: its worker's plan after a run has reached data-streams, so the job view stays
    /// as it is until the next run (until then a plan may still change `next_run_at`).
    pub async fn wait_for_next_run_beyond(
        &self,
        job: &str,
        ahead: Duration,
        within: Duration,
    ) -> Value {
        let what = format!("job {job}'s next run to be planned more than {ahead:?} ahead");
        wait_for(within, &what, || async {
            let view = self.job(job).await;
            let at = crate::contract::parse_time(view["next_run_at"].as_str()?, "next_run_at");
            (at > time::OffsetDateTime::now_utc() + ahead).then_some(view)
        })
        .await
    }

    /// Waits until `GET /readyz` answers 200.
    pub async fn wait_ready(&self, within: Duration) {
        self.wait_for_readyz(StatusCode::OK, within).await;
    }

    /// Waits until `GET /readyz` answers `want` (a refused connection is not an answer);
    /// on timeout, panics with the last answer it had, which says what was down.
    pub async fn wait_for_readyz(&self, want: StatusCode, within: Duration) {
        let last = std::sync::Mutex::new(String::from("no answer"));
        let reached = crate::poll::poll_until(within, || async {
            let request = self.http.get(format!("{}/readyz", self.base));
            let request = match &self.token {
                Some(token) => request.bearer_auth(token),
                None => request,
            };
            let response = match request.send().await {
                Ok(response) => response,
                Err(error) => {
                    *last.lock().unwrap() = format!("no answer: {error}");
                    return None;
                }
            };
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            *last.lock().unwrap() = format!("{status} {body}");
            (status == want).then_some(())
        })
        .await;
        if reached.is_none() {
            panic!(
                "timed out after {within:?} waiting for GET /readyz = {want}; last: {}",
                last.lock().unwrap()
            );
        }
    }
}

/// `body[key]` as an array, panicking with the body when it is not one.
pub fn array(body: &Value, key: &str) -> Vec<Value> {
    body.get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| panic!("expected an array under {key:?} in {body}"))
}

fn parse_body(text: &str) -> Value {
    if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
    }
}
