//! Operational routes: liveness, readiness, metrics, dead letters, the OpenAPI document.

use std::sync::atomic::Ordering;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;

use super::error::{AppError, ErrorBody};
use super::params::Params;
use super::AppState;
use crate::metrics::{set, StateLabels, CONTENT_TYPE};
use crate::store::DeadLetter;

/// `{"status":"ok"}`.
#[derive(Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// Readiness and what it depends on; when not ready, `error` says what is down.
#[derive(Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Readiness {
    /// Present when not ready: `{"code":"not_ready","message":"<what is down>"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<super::error::ErrorDetail>,
    /// `ready` or `not_ready`.
    pub status: String,
    /// NATS connected.
    pub nats_connected: bool,
    /// The durable consumer is bound.
    pub consumer_bound: bool,
    /// The store is open.
    pub store_open: bool,
    /// This instance controls jobs (holds the control lease); false on a read replica.
    pub controls: bool,
    /// The job records are caught up with the `newsflow_jobs` bucket.
    pub jobs_current: bool,
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "ops", security(()), responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

/// Readiness: NATS connected, consumer bound, job records caught up with the jobs bucket,
/// store not stalled; `controls` says whether this instance controls jobs.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, body = Readiness), (status = 401, body = ErrorBody), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let nats_connected = state.shared.nats_connected();
    let consumer_bound = state.shared.consumer_bound.load(Ordering::Relaxed);
    let stalled = state.shared.store_stalled.get();
    let mut down = Vec::new();
    if let Some(reason) = stalled {
        down.push(reason.clone());
    }
    if let Some(reason) = state.shared.dead_task.get() {
        down.push(reason.clone());
    }
    if !nats_connected {
        down.push("NATS is not connected".to_owned());
    }
    if !consumer_bound {
        down.push("the stream consumer is not bound".to_owned());
    }
    if !state.shared.role.is_settled() {
        down.push("this instance has not yet tried for the control lease".to_owned());
    }
    let jobs_current = state.shared.jobs.is_current();
    if !jobs_current {
        down.push("the job records are not caught up with the newsflow_jobs bucket".to_owned());
    }
    let ready = down.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        error: (!ready).then(|| super::error::ErrorDetail {
            code: "not_ready".to_owned(),
            message: down.join("; "),
        }),
        status: if ready { "ready" } else { "not_ready" }.to_owned(),
        nats_connected,
        consumer_bound,
        store_open: stalled.is_none(),
        controls: state.shared.role.controls(),
        jobs_current,
    };
    (status, Json(body))
}

/// Prometheus metrics (OpenMetrics text), the state-mirroring gauges read just now.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus metrics in the OpenMetrics text format", content_type = "application/openmetrics-text"), (status = 401, body = ErrorBody)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let shared = &state.shared;
    let metrics = &shared.metrics;
    set(&metrics.jobs, shared.store.job_count() as u64);
    set(&metrics.workers_alive, state.control.alive_count() as u64);
    set(&metrics.controls, u64::from(shared.role.controls()));
    set(
        &metrics.consumer_bound,
        u64::from(shared.consumer_bound.load(Ordering::Relaxed)),
    );
    set(&metrics.nats_connected, u64::from(shared.nats_connected()));
    set(&metrics.store_bytes, shared.store.size_on_disk());
    let (all, running) = {
        let index = shared.store.job_index();
        (index.len(), index.running())
    };
    for (label, count) in [("running", running), ("stopped", all - running)] {
        set(
            &metrics
                .jobs_by_state
                .get_or_create(&StateLabels { state: label }),
            count as u64,
        );
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.encode())
}

/// `{"dead_letters":[..]}`.
#[derive(Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DeadLetters {
    /// Poison messages, oldest first.
    pub dead_letters: Vec<DeadLetter>,
    /// The cursor of the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// Poison stream messages kept for inspection.
#[utoipa::path(get, path = "/dead-letters", tag = "ops", params(("limit" = Option<u32>, Query, minimum = 1, maximum = 1000), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = DeadLetters), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn dead_letters(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<DeadLetters>, AppError> {
    let params = Params::parse(query.as_deref(), &["limit", "cursor"])?;
    let limit = params.limit()?;
    let after = params.cursor()?;
    let (dead_letters, next) = state
        .shared
        .store
        .dead_letters_page(after.as_deref(), limit)?;
    Ok(Json(DeadLetters {
        dead_letters,
        next_cursor: next.map(|k| newsflow_core::cursor::encode(&k)),
    }))
}

/// The OpenAPI document, generated from the handlers and types.
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json"), (status = 401, body = ErrorBody)))]
pub async fn openapi(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::document(state.shared.api_token.is_some()),
    )
}
