//! Start and stop commands: sending them (data-streams) and answering them (worker).

use std::time::Duration;

use async_nats::{Client, Request};
use bytes::Bytes;
use newsflow_core::{ErrorInfo, JobId};

use crate::subjects;
use crate::wire::{
    parse_capped, parse_payload, Ack, JobsPage, ListJobs, StartJob, StopJob, WorkerId,
    MAX_HEARTBEAT_BYTES,
};

/// Why a command got no positive answer.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Nobody listens: no worker is running (or the owner is gone).
    #[error("no worker is listening")]
    NoWorker,
    /// A worker listens but did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The worker refused.
    #[error("the worker refused: {} ({})", .0.message, .0.code)]
    Refused(ErrorInfo),
    /// The connection failed or the answer was not an ack.
    #[error("command failed: {0}")]
    Other(String),
}

/// The positive answer to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// The worker that acknowledged.
    pub worker_id: WorkerId,
    /// The job.
    pub job_id: JobId,
}

/// Sends `payload` to `subject` and waits up to `timeout` for the reply, mapping "nobody
/// listens" and "nobody answered in time" to their own errors.
async fn exchange(
    client: &Client,
    subject: String,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<async_nats::Message, CommandError> {
    let request = Request::new()
        .payload(Bytes::from(payload))
        .timeout(Some(timeout));
    client
        .send_request(subject, request)
        .await
        .map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => CommandError::NoWorker,
            async_nats::RequestErrorKind::TimedOut => CommandError::Timeout(timeout),
            _ => CommandError::Other(e.to_string()),
        })
}

/// A command: its reply is an [`Ack`], a refusal becomes [`CommandError::Refused`].
async fn request(
    client: &Client,
    subject: String,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<Acked, CommandError> {
    let reply = exchange(client, subject, payload, timeout).await?;
    match parse_payload::<Ack>(&reply.payload) {
        Ok(Ack::Ok { worker_id, job_id }) => Ok(Acked { worker_id, job_id }),
        Ok(Ack::Err(error)) => Err(CommandError::Refused(error)),
        Err(error) => Err(CommandError::Other(error.to_string())),
    }
}

/// Asks one worker of the queue group to start `command.job`.
pub async fn send_start(
    client: &Client,
    command: &StartJob,
    timeout: Duration,
) -> Result<Acked, CommandError> {
    let payload = serde_json::to_vec(command).map_err(|e| CommandError::Other(e.to_string()))?;
    request(client, subjects::START.to_owned(), payload, timeout).await
}

/// Asks `worker`, and only it, to start `command.job` (even placement).
pub async fn send_start_to(
    client: &Client,
    worker: &WorkerId,
    command: &StartJob,
    timeout: Duration,
) -> Result<Acked, CommandError> {
    let payload = serde_json::to_vec(command).map_err(|e| CommandError::Other(e.to_string()))?;
    request(client, subjects::start_on(worker), payload, timeout).await
}

/// Asks `worker` for one page of the jobs it runs.
pub async fn list_jobs(
    client: &Client,
    worker: &WorkerId,
    ask: &ListJobs,
    timeout: Duration,
) -> Result<JobsPage, CommandError> {
    let payload = serde_json::to_vec(ask).map_err(|e| CommandError::Other(e.to_string()))?;
    let reply = exchange(client, subjects::worker_jobs(worker), payload, timeout).await?;
    match parse_capped::<JobsPage>(&reply.payload, MAX_HEARTBEAT_BYTES) {
        Ok(page) => Ok(page),
        Err(error) => match parse_payload::<Ack>(&reply.payload) {
            Ok(Ack::Err(refusal)) => Err(CommandError::Refused(refusal)),
            _ => Err(CommandError::Other(error.to_string())),
        },
    }
}

/// Asks `worker` to stop `job`.
pub async fn send_stop(
    client: &Client,
    worker: &WorkerId,
    job: &JobId,
    timeout: Duration,
) -> Result<Acked, CommandError> {
    let payload = serde_json::to_vec(&StopJob {
        job_id: job.clone(),
    })
    .map_err(|e| CommandError::Other(e.to_string()))?;
    request(client, subjects::stop(worker), payload, timeout).await
}

/// Answers a request; a failed reply is logged, never fatal (the requester times out).
pub async fn reply(client: &Client, reply_to: Option<&async_nats::Subject>, ack: &Ack) {
    let Some(reply_to) = reply_to else {
        tracing::warn!("command without a reply subject; nothing to answer");
        return;
    };
    match serde_json::to_vec(ack) {
        Ok(body) => {
            if let Err(error) = client.publish(reply_to.clone(), Bytes::from(body)).await {
                tracing::warn!(%error, "could not send a command reply");
            }
        }
        Err(error) => tracing::error!(%error, "could not serialize an ack"),
    }
}
