//! Start and stop commands: parsed defensively, acted on, answered with an `Ack`.
//!
//! Commands are handled one at a time, in arrival order. A start is answered once the job is
//! registered; a stop once the job's task has ended, so nothing of it is published after.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use newsflow_core::ErrorInfo;
use newsflow_nats::async_nats::service::endpoint::Endpoint;
use newsflow_nats::async_nats::service::Request;
use newsflow_nats::wire::{parse_payload, Ack, StartJob, StopJob, WorkerId};
use tokio_util::sync::CancellationToken;

use crate::jobs::{Registry, Started};

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
    /// Answers commands from `start` and `stop` until `shutdown` fires; then unsubscribes and
    /// refuses the commands already delivered, so their senders can try another worker at once.
    pub async fn serve(
        &self,
        mut start: Endpoint,
        mut stop: Endpoint,
        shutdown: &CancellationToken,
    ) -> Result<(), SubscriptionEnded> {
        loop {
            let (message, is_start) = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                message = start.next() => (message.ok_or(SubscriptionEnded("start"))?, true),
                message = stop.next() => (message.ok_or(SubscriptionEnded("stop"))?, false),
            };
            let payload = &message.message.payload;
            let ack = if is_start {
                start_job(&self.registry, &self.worker_id, payload)
            } else {
                stop_job(&self.registry, &self.worker_id, payload, self.stop_grace).await
            };
            answer(&message, &ack).await;
        }
        tracing::info!("shutting down: no longer taking commands");
        for subscription in [&mut start, &mut stop] {
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
        for subscription in [&mut start, &mut stop] {
            while let Some(message) = next_buffered(subscription) {
                answer(&message, &refusal).await;
            }
        }
        Ok(())
    }
}

/// A command already delivered to `endpoint`, without waiting for more.
fn next_buffered(endpoint: &mut Endpoint) -> Option<Request> {
    futures::FutureExt::now_or_never(endpoint.next()).flatten()
}

/// Answers a command with its ack: the same bytes on the same reply subject as a plain
/// publish, sent through the service request so `$SRV.STATS` counts it.
async fn answer(request: &Request, ack: &Ack) {
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
        Ok(StartJob { job, .. }) => {
            let job_id = job.id().clone();
            match registry.start(job) {
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

    fn registry() -> Registry {
        Registry::new(Arc::new(|_spec, cancel: CancellationToken| {
            tokio::spawn(async move { cancel.cancelled().await })
        }))
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
