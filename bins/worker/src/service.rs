//! The worker as a NATS micro service: every worker registers as `newsflow-worker` (with its
//! id in the metadata), so `nats micro ls|info|stats` list the workers and `$SRV.PING`,
//! `$SRV.INFO` and `$SRV.STATS` are answered.
//!
//! Its two endpoints are the contract's command subjects, unchanged: `news.ctl.start` in the
//! `workers` queue group (one worker takes each start), and this worker's own
//! `news.ctl.worker.<id>.stop`. A service endpoint always subscribes in a queue group; the
//! stop endpoint's group is named after the worker, and a worker id is unique per process, so
//! this group of one receives exactly what the plain subscription did. (Only two processes
//! misconfigured with the same id would differ: one of them, not both, would get a stop.)

use std::collections::HashMap;

use anyhow::Context as _;
use newsflow_nats::async_nats::service::endpoint::Endpoint;
use newsflow_nats::async_nats::service::{Service, ServiceExt as _};
use newsflow_nats::async_nats::Client;
use newsflow_nats::subjects;
use newsflow_nats::wire::WorkerId;

/// The micro service name every worker registers under.
pub const SERVICE_NAME: &str = "newsflow-worker";

/// Registers the service and its start and stop endpoints.
pub async fn register(
    nats: &Client,
    worker_id: &WorkerId,
) -> anyhow::Result<(Service, Endpoint, Endpoint)> {
    let metadata = HashMap::from([("worker_id".to_owned(), worker_id.to_string())]);
    let service = nats
        .service_builder()
        .description("newsflow worker: runs NewsAPI jobs and publishes their batches")
        .metadata(metadata)
        .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))
        .context("registering the NATS micro service")?;
    let start = service
        .endpoint_builder()
        .name("start")
        .queue_group(subjects::WORKERS_QUEUE)
        .add(subjects::START)
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))
        .with_context(|| format!("subscribing to {}", subjects::START))?;
    let stop_subject = subjects::stop(worker_id);
    let stop = service
        .endpoint_builder()
        .name("stop")
        .queue_group(worker_id.to_string())
        .add(stop_subject.clone())
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))
        .with_context(|| format!("subscribing to {stop_subject}"))?;
    Ok((service, start, stop))
}
