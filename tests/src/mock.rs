//! `MockClient`: asks the NewsAPI mock directly (what it serves for a query) and drives its
//! `/__mock/*` control API (faults, request statistics, reset).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

/// The key the mock accepts by default.
pub const DEMO_KEY: &str = "demo-key";

/// A client of one mock server.
#[derive(Debug, Clone)]
pub struct MockClient {
    base: String,
    http: reqwest::Client,
    key: String,
}

impl MockClient {
    /// A client of `http://<addr>` sending the demo key.
    pub fn new(addr: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|e| panic!("building an HTTP client: {e}"));
        Self {
            base: format!("http://{addr}"),
            http,
            key: DEMO_KEY.to_owned(),
        }
    }

    /// `http://host:port`, what workers get as `--newsapi-url`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /v2/<endpoint>` with `query` and the key; returns status and JSON body.
    pub async fn fetch(&self, endpoint: &str, query: &[(&str, String)]) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}/v2/{endpoint}", self.base))
            .header("X-Api-Key", &self.key)
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET mock /v2/{endpoint}: {e}"));
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// The articles a job with these NewsAPI `params` gets from `/v2/everything` over pages
    /// `1..=max_pages` of `page_size`, stopping like a worker does (short page, 426 cap).
    pub async fn expected_articles(
        &self,
        params: &[(&str, &str)],
        max_pages: u32,
        page_size: u32,
    ) -> Vec<Value> {
        let mut articles = Vec::new();
        for page in 1..=max_pages {
            let mut query: Vec<(&str, String)> =
                params.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
            query.push(("pageSize", page_size.to_string()));
            query.push(("page", page.to_string()));
            let (status, body) = self.fetch("everything", &query).await;
            if status == StatusCode::UPGRADE_REQUIRED {
                break;
            }
            assert_eq!(status, StatusCode::OK, "mock page {page}: {body}");
            let got = body["articles"].as_array().cloned().unwrap_or_default();
            let short = got.len() < page_size as usize;
            articles.extend(got);
            if short {
                break;
            }
        }
        articles
    }

    /// Queues a fault: `POST /__mock/faults` with `spec` (e.g. `{"kind":"rate_limited","times":2}`).
    pub async fn inject_fault(&self, spec: &Value) {
        let response = self
            .http
            .post(format!("{}/__mock/faults", self.base))
            .json(spec)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /__mock/faults: {e}"));
        assert!(
            response.status().is_success(),
            "POST /__mock/faults {spec}: {}",
            response.status()
        );
    }

    /// Clears queued faults.
    pub async fn clear_faults(&self) {
        let response = self
            .http
            .delete(format!("{}/__mock/faults", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("DELETE /__mock/faults: {e}"));
        assert!(
            response.status().is_success(),
            "DELETE /__mock/faults: {}",
            response.status()
        );
    }

    /// `GET /__mock/stats`: `{"requests","by_status","by_path"}`.
    pub async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/__mock/stats", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /__mock/stats: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET /__mock/stats body: {e}"))
    }

    /// How many responses had `status` so far.
    pub async fn count_status(&self, status: u16) -> u64 {
        self.stats().await["by_status"][status.to_string()]
            .as_u64()
            .unwrap_or(0)
    }

    /// `POST /__mock/reset`: faults and statistics cleared.
    pub async fn reset(&self) {
        let response = self
            .http
            .post(format!("{}/__mock/reset", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /__mock/reset: {e}"));
        assert!(
            response.status().is_success(),
            "POST /__mock/reset: {}",
            response.status()
        );
    }
}
