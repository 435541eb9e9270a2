//! Heartbeats: which jobs this worker runs, published at once and then every few seconds,
//! so data-streams can tell live owners from dead ones.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use newsflow_core::digest::JobSetDigest;
use newsflow_core::{now_utc, JobId};
use newsflow_nats::async_nats::Client;
use newsflow_nats::subjects;
use newsflow_nats::wire::{Heartbeat, WorkerId};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::jobs::Registry;

/// The heartbeat payload: `{worker_id, jobs, at}` with the jobs sorted.
pub fn payload(worker_id: &WorkerId, mut jobs: Vec<JobId>) -> Result<Bytes, serde_json::Error> {
    jobs.sort_unstable();
    jobs.dedup();
    let digest = JobSetDigest::of(&jobs);
    let heartbeat = Heartbeat::new(worker_id.clone(), || jobs, digest, now_utc());
    serde_json::to_vec(&heartbeat).map(Bytes::from)
}

/// Publishes one heartbeat; a failure is logged, never fatal (the next one may pass).
pub async fn beat(client: &Client, worker_id: &WorkerId, jobs: Vec<JobId>) {
    match payload(worker_id, jobs) {
        Ok(body) => {
            if let Err(error) = client.publish(subjects::HEARTBEAT, body).await {
                tracing::warn!(%error, "could not publish a heartbeat");
            }
        }
        Err(error) => tracing::error!(%error, "could not serialize a heartbeat"),
    }
}

/// Beats at once and then every `every` until `stop` fires.
pub async fn run(
    client: Client,
    worker_id: WorkerId,
    registry: Arc<Registry>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = beat(&client, &worker_id, registry.job_ids()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_names_the_worker_and_its_jobs_sorted() {
        let worker = WorkerId::parse("w1").expect("valid");
        let jobs = ["b", "a"].map(|j| JobId::parse(j).expect("valid")).to_vec();

        let body = payload(&worker, jobs).expect("serializes");

        let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(value["worker_id"], "w1");
        assert_eq!(value["jobs"], serde_json::json!(["a", "b"]));
        let parsed: Heartbeat = serde_json::from_slice(&body).expect("a Heartbeat");
        assert!(parsed.at <= now_utc());
    }
}
