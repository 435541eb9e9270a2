//! Heartbeats: which jobs this worker runs, published at once and then every few seconds,
//! so data-streams can tell live owners from dead ones. Each carries the count and digest of
//! the job set, kept up to date by the registry; the list itself only while it is short
//! ([`HEARTBEAT_LIST_MAX`]), so a heartbeat at 100,000 jobs is a few hundred bytes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use newsflow_core::digest::JobSetDigest;
use newsflow_core::{now_utc, JobId};
use newsflow_nats::async_nats::Client;
use newsflow_nats::subjects;
use newsflow_nats::wire::{Heartbeat, WorkerId, HEARTBEAT_LIST_MAX};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::jobs::Registry;

/// The heartbeat payload of a worker whose jobs have `digest`, with their sorted ids when
/// `listed` (see [`Heartbeat::new`]).
pub fn payload(
    worker_id: &WorkerId,
    digest: JobSetDigest,
    listed: Option<Vec<JobId>>,
) -> Result<Bytes, serde_json::Error> {
    let heartbeat = Heartbeat::new(
        worker_id.clone(),
        || listed.unwrap_or_default(),
        digest,
        now_utc(),
    );
    serde_json::to_vec(&heartbeat).map(Bytes::from)
}

/// Publishes one heartbeat; a failure is logged, never fatal (the next one may pass).
pub async fn beat(
    client: &Client,
    worker_id: &WorkerId,
    digest: JobSetDigest,
    listed: Option<Vec<JobId>>,
) {
    match payload(worker_id, digest, listed) {
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
        let (digest, listed) = registry.job_set(HEARTBEAT_LIST_MAX);
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = beat(&client, &worker_id, digest, listed) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> JobId {
        JobId::parse(id).expect("valid")
    }

    #[test]
    fn a_short_heartbeat_names_the_worker_and_lists_its_jobs() {
        let worker = WorkerId::parse("w1").expect("valid");
        let jobs = vec![job("a"), job("b")];

        let body =
            payload(&worker, JobSetDigest::of(&jobs), Some(jobs.clone())).expect("serializes");

        let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(value["worker_id"], "w1");
        assert_eq!(value["jobs"], serde_json::json!(["a", "b"]));
        assert_eq!(value["count"], 2);
        let parsed: Heartbeat = serde_json::from_slice(&body).expect("a Heartbeat");
        assert!(parsed.at <= now_utc());
        assert_eq!(parsed.job_set().ok(), Some(JobSetDigest::of(&jobs)));
    }

    #[test]
    fn a_heartbeat_of_100k_jobs_is_a_few_hundred_bytes() {
        let worker = WorkerId::parse(&"w".repeat(64)).expect("valid");
        let mut digest = JobSetDigest::default();
        for n in 0..100_000 {
            digest.insert(&job(&format!("job-{n:06}")));
        }

        let body = payload(&worker, digest, None).expect("serializes");

        assert!(body.len() < 400, "{} bytes", body.len());
        let parsed: Heartbeat = serde_json::from_slice(&body).expect("a Heartbeat");
        assert_eq!(parsed.jobs, None);
        assert_eq!(parsed.job_set().ok(), Some(digest));
    }
}
