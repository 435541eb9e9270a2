//! The worker as a NATS micro service: every worker registers as `newsflow-worker` (with its
//! id in the metadata), so `nats micro ls|info|stats` list the workers and `$SRV.PING`,
//! `$SRV.INFO` and `$SRV.STATS` are answered.
//!
//! Its endpoints are the contract's command subjects: `news.ctl.start` in the `workers` queue
//! group (one worker takes each start), and this worker's own `news.ctl.worker.<id>.start`,
//! `.stop` and `.jobs`. A service endpoint always subscribes in a queue group; a worker's own
//! endpoints are in a group named after the worker, and a worker id is unique per process, so
//! this group of one receives exactly what a plain subscription would. (Only two processes
//! misconfigured with the same id would differ: one of them, not both, would get a command.)

use std::collections::HashMap;

use anyhow::Context as _;
use newsflow_nats::async_nats::service::endpoint::Endpoint;
use newsflow_nats::async_nats::service::{Service, ServiceExt as _};
use newsflow_nats::async_nats::Client;
use newsflow_nats::subjects;
use newsflow_nats::wire::WorkerId;

/// The micro service name every worker registers under.
pub const SERVICE_NAME: &str = "newsflow-worker";

/// The service's command endpoints.
pub struct Endpoints {
    /// `news.ctl.start`, in the `workers` queue group.
    pub start: Endpoint,
    /// `news.ctl.worker.<id>.start`: a start addressed to this worker.
    pub start_here: Endpoint,
    /// `news.ctl.worker.<id>.stop`.
    pub stop: Endpoint,
    /// `news.ctl.worker.<id>.jobs`: pages of this worker's job ids.
    pub jobs: Endpoint,
}

/// Registers the service and its endpoints.
pub async fn register(nats: &Client, worker_id: &WorkerId) -> anyhow::Result<(Service, Endpoints)> {
    let metadata = HashMap::from([("worker_id".to_owned(), worker_id.to_string())]);
    let service = nats
        .service_builder()
        .description("newsflow worker: runs NewsAPI jobs and publishes their batches")
        .metadata(metadata)
        .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))
        .context("registering the NATS micro service")?;
    let add = |name: &'static str, group: String, subject: String| {
        let builder = service.endpoint_builder().name(name).queue_group(group);
        async move {
            builder
                .add(subject.clone())
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))
                .with_context(|| format!("subscribing to {subject}"))
        }
    };
    let own = worker_id.to_string();
    let endpoints = Endpoints {
        start: add(
            "start",
            subjects::WORKERS_QUEUE.to_owned(),
            subjects::START.to_owned(),
        )
        .await?,
        start_here: add("start_here", own.clone(), subjects::start_on(worker_id)).await?,
        stop: add("stop", own.clone(), subjects::stop(worker_id)).await?,
        jobs: add("jobs", own, subjects::worker_jobs(worker_id)).await?,
    };
    Ok((service, endpoints))
}
