//! Start, stop and list commands: parsed defensively, acted on, answered with an `Ack` (or a
//! `JobsPage`).
//!
//! Commands are handled one at a time, in arrival order. A start is answered once the job is
//! registered; a stop once the job's run in hand has ended, so nothing of it is published
//! after.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use newsflow_core::ErrorInfo;
use newsflow_nats::async_nats::service::endpoint::Endpoint;
use newsflow_nats::async_nats::service::Request;
use newsflow_nats::wire::{
    parse_payload, Ack, JobsPage, ListJobs, StartJob, StopJob, WorkerId, LIST_JOBS_MAX,
};
use tokio_util::sync::CancellationToken;

use crate::jobs::{Registry, Started};
use crate::service::Endpoints;

/// How long one shutdown step on the NATS connection may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// A command subscription ended while the worker was still serving.
#[derive(Debug, thiserror::Error)]
#[error("the {0} command subscription ended unexpectedly")]
pub struct SubscriptionEnded(&'static str);

/// What commands act on.
pub struct Commands {
    /// Named in every positive ack.
    pub worker_id: WorkerId,
    /// The jobs.
    pub registry: Arc<Registry>,
    /// How long a stop waits for the job's task to end.
    pub stop_grace: Duration,
}

impl Commands {
    /// Answers commands from `endpoints` until `shutdown` fires; then unsubscribes and
    /// refuses the commands already delivered, so their senders can try again at once.
    pub async fn serve(
        &self,
        endpoints: Endpoints,
        shutdown: &CancellationToken,
    ) -> Result<(), SubscriptionEnded> {
        let Endpoints {
            mut start,
            mut start_here,
            mut stop,
            mut jobs,
        } = endpoints;
        loop {
            let (message, kind) = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                message = start.next() => (message.ok_or(SubscriptionEnded("start"))?, Kind::Start),
                message = start_here.next() => (message.ok_or(SubscriptionEnded("addressed start"))?, Kind::Start),
                message = stop.next() => (message.ok_or(SubscriptionEnded("stop"))?, Kind::Stop),
                message = jobs.next() => (message.ok_or(SubscriptionEnded("jobs"))?, Kind::Jobs),
            };
            let payload = &message.message.payload;
            match kind {
                Kind::Start => {
                    answer(
                        &message,
                        &start_job(&self.registry, &self.worker_id, payload),
                    )
                    .await;
                }
                Kind::Stop => {
                    let ack =
                        stop_job(&self.registry, &self.worker_id, payload, self.stop_grace).await;
                    answer(&message, &ack).await;
                }
                Kind::Jobs => match list_jobs(&self.registry, payload) {
                    Ok(page) => answer(&message, &page).await,
                    Err(refusal) => answer(&message, &refusal).await,
                },
            }
        }
        tracing::info!("shutting down: no longer taking commands");
        let mut all = [&mut start, &mut start_here, &mut stop, &mut jobs];
        for subscription in all.iter_mut() {
            match tokio::time::timeout(STEP_TIMEOUT, subscription.stop()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "could not unsubscribe"),
                Err(_) => tracing::warn!("unsubscribing timed out"),
            }
        }
        let refusal = Ack::Err(ErrorInfo::new(
            "shutting_down",
            format!(
                "worker {} is shutting down; send the command again",
                self.worker_id
            ),
        ));
        for subscription in all.iter_mut() {
            while let Some(message) = next_buffered(subscription) {
                answer(&message, &refusal).await;
            }
        }
        Ok(())
    }
}

/// Which endpoint a command came from.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Start,
    Stop,
    Jobs,
}

/// A command already delivered to `endpoint`, without waiting for more.
fn next_buffered(endpoint: &mut Endpoint) -> Option<Request> {
    futures::FutureExt::now_or_never(endpoint.next()).flatten()
}

/// Answers a command with its ack (or page): the same bytes on the same reply subject as a
/// plain publish, sent through the service request so `$SRV.STATS` counts it.
async fn answer<T: serde::Serialize>(request: &Request, ack: &T) {
    if request.message.reply.is_none() {
        tracing::warn!("command without a reply subject; nothing to answer");
        return;
    }
    match serde_json::to_vec(ack) {
        Ok(body) => {
            if let Err(error) = request.respond(Ok(body.into())).await {
                tracing::warn!(%error, "could not send a command reply");
            }
        }
        Err(error) => tracing::error!(%error, "could not serialize an ack"),
    }
}

/// Acts on a start command: registers (or updates) the job before the positive answer, so
/// the next heartbeat lists it.
pub fn start_job(registry: &Registry, worker_id: &WorkerId, payload: &[u8]) -> Ack {
    match parse_payload::<StartJob>(payload) {
        Err(error) => {
            let info = error.to_info();
            tracing::warn!(code = %info.code, %error, "refused a start command");
            Ack::Err(info)
        }
        Ok(StartJob { job, not_before }) => {
            let job_id = job.id().clone();
            match registry.start(job, not_before) {
                Started::New => tracing::info!(job = %job_id, "job started"),
                Started::Updated => {
                    tracing::info!(job = %job_id, "job spec updated; used from the next run")
                }
                Started::Unchanged => tracing::debug!(job = %job_id, "job already running"),
            }
            Ack::Ok {
                worker_id: worker_id.clone(),
                job_id,
            }
        }
    }
}

/// Answers a list command: a page of the sorted ids of the jobs running here, or an
/// `invalid_payload` refusal when the request or its `limit` (1 to [`LIST_JOBS_MAX`]) is not
/// valid.
pub fn list_jobs(registry: &Registry, payload: &[u8]) -> Result<JobsPage, Ack> {
    let request = parse_payload::<ListJobs>(payload).map_err(|error| {
        let info = error.to_info();
        tracing::warn!(code = %info.code, %error, "refused a jobs request");
        Ack::Err(info)
    })?;
    if !(1..=LIST_JOBS_MAX).contains(&request.limit) {
        return Err(Ack::Err(ErrorInfo::new(
            "invalid_payload",
            format!(
                "limit is {}; it must be 1 to {LIST_JOBS_MAX}",
                request.limit
            ),
        )));
    }
    Ok(registry.page(request.after.as_ref(), request.limit as usize))
}

/// Acts on a stop command: cancels the job and waits (up to `grace`) for its task to end.
/// Stopping a job that does not run here is fine: the answer is the same.
pub async fn stop_job(
    registry: &Registry,
    worker_id: &WorkerId,
    payload: &[u8],
    grace: Duration,
) -> Ack {
    match parse_payload::<StopJob>(payload) {
        Err(error) => {
            let info = error.to_info();
            tracing::warn!(code = %info.code, %error, "refused a stop command");
            Ack::Err(info)
        }
        Ok(StopJob { job_id }) => {
            if registry.stop(&job_id, grace).await {
                tracing::info!(job = %job_id, "job stopped on command");
            } else {
                tracing::info!(job = %job_id, "stop command for a job not running here");
            }
            Ack::Ok {
                worker_id: worker_id.clone(),
                job_id,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use newsflow_core::JobId;
    use serde_json::json;

    fn registry() -> Arc<Registry> {
        let plans = Arc::new(crate::plans::PlanBoard::new(worker()));
        Registry::new(
            Arc::new(
                |_spec,
                 _late,
                 _cancel|
                 -> futures::future::BoxFuture<'static, crate::run::RunReport> {
                    Box::pin(std::future::pending())
                },
            ),
            plans,
            8,
        )
    }

    fn worker() -> WorkerId {
        WorkerId::parse("w1").expect("valid")
    }

    fn start_payload(id: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"job": {
            "id": id, "endpoint": "everything", "params": {"q": "bitcoin"},
            "interval_secs": 60, "max_pages": 1, "page_size": 10
        }}))
        .expect("serializes")
    }

    fn ok(id: &str) -> Ack {
        Ack::Ok {
            worker_id: worker(),
            job_id: JobId::parse(id).expect("valid"),
        }
    }

    fn error_code(ack: &Ack) -> Option<&str> {
        match ack {
            Ack::Err(info) => Some(info.code.as_str()),
            Ack::Ok { .. } => None,
        }
    }

    #[tokio::test]
    async fn a_valid_start_registers_the_job_before_acking() {
        let registry = registry();

        let ack = start_job(&registry, &worker(), &start_payload("bitcoin"));

        assert_eq!(ack, ok("bitcoin"));
        assert_eq!(
            registry.job_ids(),
            [JobId::parse("bitcoin").expect("valid")]
        );
    }

    #[tokio::test]
    async fn garbage_start_commands_are_refused_and_change_nothing() {
        let registry = registry();
        let invalid_spec = serde_json::to_vec(&json!({"job": {
            "id": "j", "endpoint": "everything", "params": {"q": "x"},
            "interval_secs": 0, "max_pages": 1, "page_size": 10
        }}))
        .expect("serializes");

        for payload in [
            &b"not json"[..],
            b"{}",
            br#"{"job":{"id":"Bad Id"}}"#,
            &invalid_spec,
            &vec![b' '; 70 * 1024],
        ] {
            let ack = start_job(&registry, &worker(), payload);
            assert!(error_code(&ack).is_some(), "{ack:?}");
        }
        assert!(registry.job_ids().is_empty());
        let ack = start_job(&registry, &worker(), &vec![b' '; 70 * 1024]);
        assert_eq!(error_code(&ack), Some("payload_too_large"));
    }

    #[tokio::test]
    async fn a_start_with_not_before_is_registered_at_once() {
        let registry = registry();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&start_payload("later")).expect("JSON");
        payload["not_before"] = json!("2999-01-01T00:00:00Z");

        let ack = start_job(&registry, &worker(), payload.to_string().as_bytes());

        assert_eq!(ack, ok("later"));
        assert_eq!(registry.job_ids(), [JobId::parse("later").expect("valid")]);
    }

    #[tokio::test]
    async fn jobs_are_paged_and_bad_list_requests_refused() {
        let registry = registry();
        for id in ["c", "a", "b"] {
            start_job(&registry, &worker(), &start_payload(id));
        }

        let first = list_jobs(&registry, br#"{"limit":2}"#).expect("a page");
        let rest = list_jobs(&registry, br#"{"after":"b","limit":2}"#).expect("a page");

        let ids = |page: &JobsPage| page.jobs.iter().map(|j| j.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(&first), ["a", "b"]);
        assert_eq!(first.next, Some(JobId::parse("b").expect("valid")));
        assert_eq!(ids(&rest), ["c"]);
        assert_eq!(rest.next, None);
        for bad in [
            &br#"{"limit":0}"#[..],
            br#"{"limit":10001}"#,
            br#"{"after":"Bad Id","limit":5}"#,
            br#"{"limit":5,"extra":1}"#,
            b"garbage",
        ] {
            let refusal = list_jobs(&registry, bad).expect_err("refused");
            assert_eq!(error_code(&refusal), Some("invalid_payload"), "{refusal:?}");
        }
    }

    #[tokio::test]
    async fn stopping_is_idempotent_and_garbage_is_refused() {
        let registry = registry();
        start_job(&registry, &worker(), &start_payload("bitcoin"));
        let stop = br#"{"job_id":"bitcoin"}"#;

        let first = stop_job(&registry, &worker(), stop, Duration::from_secs(5)).await;
        let again = stop_job(&registry, &worker(), stop, Duration::from_secs(5)).await;
        let garbage = stop_job(&registry, &worker(), b"{\"job\":1}", Duration::from_secs(5)).await;

        assert_eq!(first, ok("bitcoin"));
        assert_eq!(again, ok("bitcoin"));
        assert_eq!(error_code(&garbage), Some("invalid_payload"));
        assert!(registry.job_ids().is_empty());
    }
}
