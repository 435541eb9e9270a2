//! A mock server on a free port for one test, stopped when dropped.

use newsapi_mock::Config;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Response, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;

pub const KEY: &str = "demo-key";

pub struct Mock {
    base: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
}

impl Mock {
    pub async fn start() -> Self {
        Self::with(Config::default()).await
    }

    pub async fn with(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(newsapi_mock::run(config, listener, async {
            let _ = stopped.await;
        }));
        Self {
            base,
            client: reqwest::Client::new(),
            stop: Some(stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET with the right key in `X-Api-Key`.
    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .header("X-Api-Key", KEY)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_without_key(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// GET with the right key, read as JSON.
    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        json(self.get(path).await).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    pub async fn queue_fault(&self, fault: Value) {
        let response = self.post("/__mock/faults", fault).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    pub async fn stats(&self) -> Value {
        json(self.get_without_key("/__mock/stats").await).await.1
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn json(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.bytes().await.unwrap();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
    (status, value)
}

/// Asserts a NewsAPI error body with JSON content type.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> String {
    assert_eq!(response.status(), status);
    let content_type = response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let (_, body) = json(response).await;
    assert_eq!(body["status"], "error");
    assert_eq!(body["code"], code, "{body}");
    body["message"].as_str().unwrap().to_owned()
}

pub fn urls(body: &Value) -> Vec<String> {
    body["articles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["url"].as_str().unwrap().to_owned())
        .collect()
}
