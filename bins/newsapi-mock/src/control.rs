//! The `/__mock/*` control API: queue and clear faults, read and reset request counters.
//!
//! It needs no key and is not part of NewsAPI, so its errors use the project's
//! `{"error":{"code","message"}}` shape rather than NewsAPI's.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::faults::{FaultRequest, FaultSpec};
use crate::server::AppState;

/// Counts of `/v2/*` requests, as `GET /__mock/stats` shows them.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// All `/v2/*` requests, whatever their outcome.
    pub requests: u64,
    /// Requests per HTTP status, `"dropped"` for connections closed by the `drop` fault.
    pub by_status: BTreeMap<String, u64>,
    /// Requests per path.
    pub by_path: BTreeMap<String, u64>,
    /// When the last one arrived, RFC 3339.
    pub last_request_at: Option<String>,
    /// When each `/v2/*` request arrived, in milliseconds since the Unix epoch, oldest first
    /// (the latest [`MAX_ARRIVALS`]): what a metered API counts against a key's quota.
    pub arrivals_ms: std::collections::VecDeque<u64>,
}

/// How many arrival times the stats keep.
pub const MAX_ARRIVALS: usize = 100_000;

impl Stats {
    /// Notes that a `/v2/*` request arrived now, before it is answered.
    pub fn arrived(&mut self) {
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        if self.arrivals_ms.len() == MAX_ARRIVALS {
            self.arrivals_ms.pop_front();
        }
        self.arrivals_ms.push_back(u64::try_from(now).unwrap_or(0));
    }

    /// Counts one request to `path` that ended with `status`.
    pub fn record(&mut self, path: &str, status: &str) {
        self.requests += 1;
        *self.by_status.entry(status.to_owned()).or_default() += 1;
        *self.by_path.entry(path.to_owned()).or_default() += 1;
        self.last_request_at = OffsetDateTime::now_utc().format(&Rfc3339).ok();
    }
}

/// The `/__mock/*` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/__mock/faults",
            post(queue_fault).get(list_faults).delete(clear_faults),
        )
        .route("/__mock/stats", get(stats))
        .route("/__mock/reset", post(reset))
}

/// A rejected control request.
struct ControlError {
    code: &'static str,
    message: String,
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    }
}

async fn queue_fault(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ControlError> {
    let request: FaultRequest = serde_json::from_slice(&body).map_err(|error| ControlError {
        code: "invalidBody",
        message: format!(
            "the body must be a JSON fault like {{\"kind\":\"rate_limited\",\"times\":2}}: {error}"
        ),
    })?;
    let fault = FaultSpec::try_from(request).map_err(|error| ControlError {
        code: "invalidFault",
        message: error.to_string(),
    })?;
    let queued = state.faults().push(fault);
    tracing::info!(kind = fault.kind.name(), times = ?fault.times, queued, "fault queued");
    Ok(Json(json!({ "queued": queued })))
}

async fn list_faults(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "faults": state.faults().snapshot() }))
}

async fn clear_faults(State(state): State<AppState>) -> Json<serde_json::Value> {
    let cleared = state.faults().clear();
    Json(json!({ "cleared": cleared }))
}

async fn stats(State(state): State<AppState>) -> Json<Stats> {
    Json(state.stats().clone())
}

async fn reset(State(state): State<AppState>) -> Json<serde_json::Value> {
    let cleared = state.faults().clear();
    *state.stats() = Stats::default();
    Json(json!({ "reset": true, "cleared": cleared }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_by_status_and_path() {
        let mut stats = Stats::default();
        stats.record("/v2/everything", "200");
        stats.record("/v2/everything", "429");
        stats.record("/v2/top-headlines", "200");
        assert_eq!(stats.requests, 3);
        assert_eq!(stats.by_status["200"], 2);
        assert_eq!(stats.by_status["429"], 1);
        assert_eq!(stats.by_path["/v2/everything"], 2);
        assert!(stats.last_request_at.is_some());
    }
}
