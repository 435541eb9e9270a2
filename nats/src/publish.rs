//! JetStream publishing that awaits every ack and retries with the same `Nats-Msg-Id`, so a
//! retry after a lost ack is dropped by the server's duplicate window instead of stored twice.

use std::future::IntoFuture;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage as Publish, publish::PublishAck};
use bytes::Bytes;
use newsflow_core::retry::Backoff;
use newsflow_runtime::retry::{retry, Failure, RetryError, RetryPolicy};
use tokio_util::sync::CancellationToken;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The subject.
    pub subject: String,
    /// Its `Nats-Msg-Id`.
    pub msg_id: String,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The JSON payload.
    pub payload: Bytes,
}

impl Outgoing {
    fn to_publish(&self) -> Publish {
        let mut publish = Publish::build()
            .message_id(&self.msg_id)
            .payload(self.payload.clone());
        for (name, value) in &self.headers {
            publish = publish.header(*name, value.as_str());
        }
        publish
    }
}

/// How publishes are retried: 100 ms doubling to 2 s between attempts, giving up on a
/// message after 120 s, well inside the `NEWS` stream's 300 s duplicate window so that a
/// retry after a lost ack is always recognised as a duplicate.
pub fn default_policy() -> RetryPolicy {
    RetryPolicy::new(Backoff::new(
        Duration::from_millis(100),
        Duration::from_secs(2),
    ))
    .give_up_after(Duration::from_secs(120))
}

/// Publishing gave up.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Retried until the policy's limit.
    #[error("publishing {msg_id} failed for {elapsed:?}: {last}")]
    GaveUp {
        /// The message id.
        msg_id: String,
        /// How long it tried.
        elapsed: Duration,
        /// The last error.
        last: String,
    },
    /// Shutdown or cancellation came first.
    #[error("publishing was cancelled")]
    Cancelled,
}

/// What a set of publishes came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PublishReport {
    /// Messages the stream acknowledged.
    pub acked: usize,
    /// Of those, how many the server recognised as duplicates.
    pub duplicates: usize,
    /// Messages that needed at least one retry.
    pub retried: usize,
}

/// Publishes `messages` pipelined (all sent, then all acks awaited), then retries each one
/// whose ack did not come, one by one with backoff, until acked, the deadline, or `cancel`.
pub async fn publish_all(
    js: &jetstream::Context,
    messages: &[Outgoing],
    policy: &RetryPolicy,
    cancel: &CancellationToken,
) -> Result<PublishReport, PublishError> {
    let mut pending = Vec::with_capacity(messages.len());
    let mut failed = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        match js
            .send_publish(message.subject.clone(), message.to_publish())
            .await
        {
            Ok(ack) => pending.push((index, ack)),
            Err(_) => failed.push(index),
        }
    }
    let mut report = PublishReport::default();
    let (indices, acks): (Vec<_>, Vec<_>) = pending.into_iter().unzip();
    for (index, result) in indices
        .into_iter()
        .zip(futures::future::join_all(acks.into_iter().map(|ack| ack.into_future())).await)
    {
        match result {
            Ok(ack) => count(&mut report, &ack),
            Err(_) => failed.push(index),
        }
    }
    failed.sort_unstable();
    for index in failed {
        let ack = publish_one(js, &messages[index], policy, cancel).await?;
        report.retried += 1;
        count(&mut report, &ack);
    }
    Ok(report)
}

fn count(report: &mut PublishReport, ack: &PublishAck) {
    report.acked += 1;
    if ack.duplicate {
        report.duplicates += 1;
    }
}

/// Publishes one message and awaits its ack, retrying with the same message id through
/// disconnects, timeouts and "no responders" while JetStream recovers.
pub async fn publish_one(
    js: &jetstream::Context,
    message: &Outgoing,
    policy: &RetryPolicy,
    cancel: &CancellationToken,
) -> Result<PublishAck, PublishError> {
    let what = format!("publish of {} not acknowledged", message.msg_id);
    retry(policy, cancel, &what, || async move {
        let ack = js
            .send_publish(message.subject.clone(), message.to_publish())
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?;
        ack.await.map_err(|e| Failure::Transient(e.to_string()))
    })
    .await
    .map_err(|error| match error {
        RetryError::Cancelled => PublishError::Cancelled,
        RetryError::GaveUp(gave_up) => PublishError::GaveUp {
            msg_id: message.msg_id.clone(),
            elapsed: gave_up.elapsed,
            last: gave_up.error,
        },
    })
}
