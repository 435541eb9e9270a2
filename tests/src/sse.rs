//! `EventStream`: a client of data-streams' server-sent event streams that reads events one at
//! a time, with a deadline, as a browser's `fetch` reader would.

use std::collections::VecDeque;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::Api;

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// `id:`.
    pub id: String,
    /// `event:`.
    pub event: String,
    /// `data:`, parsed.
    pub data: Value,
}

/// An open stream.
#[derive(Debug)]
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
    ready: VecDeque<SseEvent>,
    /// Comment lines (`: ...`) seen so far.
    pub comments: usize,
}

/// Opens `GET path` on `api`'s server as an event stream, resuming after `last_event_id`
/// when given; `Err` holds the status and body of a refusal.
pub async fn open(
    api: &Api,
    path: &str,
    last_event_id: Option<&str>,
) -> Result<EventStream, (StatusCode, Value)> {
    // No overall timeout: a stream lasts as long as the test reads it.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_else(|e| panic!("building an HTTP client: {e}"));
    let mut request = http.get(format!("{}{path}", api.base()));
    if let Some(token) = api.token() {
        request = request.bearer_auth(token);
    }
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status();
    if status != StatusCode::OK {
        let body = response.json().await.unwrap_or(Value::Null);
        return Err((status, body));
    }
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "GET {path}: content type {content_type:?}"
    );
    Ok(EventStream {
        response,
        buffer: String::new(),
        ready: VecDeque::new(),
        comments: 0,
    })
}

impl EventStream {
    /// The next event within `within`; `None` when none came or the stream ended.
    pub async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            self.parse_ready();
        }
    }

    /// Reads events until `want` says it has enough, within `within`; panics otherwise.
    pub async fn collect_until(
        &mut self,
        within: Duration,
        what: &str,
        mut want: impl FnMut(&[SseEvent]) -> bool,
    ) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        while !want(&seen) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(event) => seen.push(event),
                None => panic!(
                    "no more events within {within:?} waiting for {what}; seen: {:#?}",
                    seen.iter()
                        .map(|e| format!("{} {} {}", e.id, e.event, e.data))
                        .collect::<Vec<_>>()
                ),
            }
        }
        seen
    }

    fn parse_ready(&mut self) {
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if line.starts_with(':') {
                    self.comments += 1;
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim_start().to_owned();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim_start().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if data.is_empty() && event.is_empty() {
                continue;
            }
            let data = serde_json::from_str(&data)
                .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {data}"));
            self.ready.push_back(SseEvent { id, event, data });
        }
    }
}
