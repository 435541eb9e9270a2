//! The worker's ops address (`--metrics-addr`): `/metrics`, `/healthz` and `/readyz`, for
//! Prometheus and for an orchestrator's probes. It is up from the start, before NATS is
//! reached, so a worker that cannot reach NATS is visible as live but not ready.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use newsflow_nats::async_nats::{connection, Client};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::jobs::Registry;
use crate::metrics::{self, global};

/// What the ops routes read; filled in as the worker comes up.
#[derive(Default)]
pub struct Health {
    /// The NATS client, once connected.
    pub nats: OnceLock<Client>,
    /// The jobs, once the worker takes commands.
    pub registry: OnceLock<Arc<Registry>>,
    /// Whether the start and stop subscriptions are being served.
    pub commands_live: AtomicBool,
}

impl Health {
    fn nats_connected(&self) -> bool {
        self.nats
            .get()
            .is_some_and(|c| c.connection_state() == connection::State::Connected)
    }
}

/// Binds `addr` and serves the ops routes until `shutdown`; returns the server's task and the
/// bound address (the real port when `addr`'s was 0), which the ready line names.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> anyhow::Result<(JoinHandle<()>, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the ops address {addr} (--metrics-addr)"))?;
    let bound = listener
        .local_addr()
        .context("reading the ops listener's address")?;
    tracing::info!(addr = %bound, "ops address up: /metrics, /healthz, /readyz");
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(health);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the ops address stopped serving");
        }
    });
    Ok((task, bound))
}

async fn metrics_text(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let metrics = global();
    let owned = health.registry.get().map_or(0, |r| r.count());
    metrics::set(&metrics.jobs_owned, owned as u64);
    metrics::set(&metrics.nats_connected, u64::from(health.nats_connected()));
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics.encode(),
    )
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when NATS is connected and the command subscriptions are served; otherwise 503 in the
/// contract's error shape, naming what is down.
async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let nats_connected = health.nats_connected();
    let commands_subscribed = health.commands_live.load(Ordering::Relaxed);
    let mut down = Vec::new();
    if !nats_connected {
        down.push("NATS is not connected");
    }
    if !commands_subscribed {
        down.push("the command subscriptions are not live");
    }
    let mut body = json!({
        "status": if down.is_empty() { "ready" } else { "not_ready" },
        "nats_connected": nats_connected,
        "commands_subscribed": commands_subscribed,
    });
    if down.is_empty() {
        return (StatusCode::OK, Json(body));
    }
    body["error"] = json!({"code": "not_ready", "message": down.join("; ")});
    (StatusCode::SERVICE_UNAVAILABLE, Json(body))
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(
            json!({"error": {"code": "route_not_found", "message": "the ops address serves /metrics, /healthz and /readyz"}}),
        ),
    )
}
