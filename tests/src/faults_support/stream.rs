//! The `NEWS` stream as the server holds it, read through an ephemeral consumer; the durable
//! consumer's progress read with raw JetStream API requests (their JSON is the same on every
//! server version).

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use bytes::Bytes;
use futures::StreamExt;
use newsflow_nats::subjects;
use serde_json::Value;
use time::OffsetDateTime;

use crate::bus::Bus;
use crate::poll::wait_for;

/// How long data-streams may take to consume everything the stream holds.
pub const INGEST_WITHIN: Duration = Duration::from_secs(90);

/// One message of the stream.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    /// Stream sequence.
    pub seq: u64,
    /// Subject.
    pub subject: String,
    /// `Nats-Msg-Id`, when it had one.
    pub msg_id: Option<String>,
    /// `Newsflow-Worker`, when it had one.
    pub worker: Option<String>,
    /// When the server stored it.
    pub published: OffsetDateTime,
    /// Payload.
    pub payload: Bytes,
}

async fn js_api(bus: &Bus, subject: &str) -> Option<Value> {
    let reply = bus
        .client()
        .request(subject.to_owned(), Bytes::new())
        .await
        .ok()?;
    let body: Value = serde_json::from_slice(&reply.payload).ok()?;
    body.get("error").is_none().then_some(body)
}

/// The raw `$JS.API.CONSUMER.INFO` answer for data-streams' durable consumer, if it exists.
pub async fn consumer_info(bus: &Bus) -> Option<Value> {
    js_api(
        bus,
        &format!("$JS.API.CONSUMER.INFO.{}.data-streams", subjects::STREAM),
    )
    .await
}

/// The stream's last sequence.
async fn last_seq(bus: &Bus) -> Option<u64> {
    let info = js_api(bus, &format!("$JS.API.STREAM.INFO.{}", subjects::STREAM)).await?;
    info["state"]["last_seq"].as_u64()
}

/// Waits until data-streams' durable consumer was delivered the stream's last message and
/// every delivery is acknowledged (or terminated): all the stream holds is stored.
pub async fn wait_until_ingested(bus: &Bus, within: Duration) {
    wait_for(
        within,
        "data-streams to consume and acknowledge the whole stream",
        || async {
            let last = last_seq(bus).await?;
            let info = consumer_info(bus).await?;
            let delivered = info["delivered"]["stream_seq"].as_u64()?;
            let caught_up = info["num_pending"].as_u64() == Some(0)
                && info["num_ack_pending"].as_u64() == Some(0)
                && delivered >= last;
            caught_up.then_some(())
        },
    )
    .await;
}

/// Every message the stream holds, in stream order.
pub async fn read_stream(bus: &Bus) -> Vec<StreamRecord> {
    let Some(last) = last_seq(bus).await else {
        return Vec::new();
    };
    let stream = bus
        .jetstream()
        .get_stream(subjects::STREAM)
        .await
        .unwrap_or_else(|e| panic!("looking up the NEWS stream: {e}"));
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("creating a reader of the NEWS stream: {e}"));
    let mut records = Vec::new();
    let mut seen = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen < last {
        assert!(
            tokio::time::Instant::now() < deadline,
            "read {seen} of {last} stream messages in 120 s"
        );
        let mut batch = match consumer.fetch().max_messages(1000).messages().await {
            Ok(batch) => batch,
            Err(_) => continue,
        };
        while let Some(Ok(message)) = batch.next().await {
            let Ok(info) = message.info() else { continue };
            let (seq, published) = (info.stream_sequence, info.published);
            seen = seen.max(seq);
            let header = |name: &str| {
                message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_owned())
            };
            records.push(StreamRecord {
                seq,
                subject: message.subject.to_string(),
                msg_id: header("Nats-Msg-Id"),
                worker: header(subjects::WORKER_HEADER),
                published,
                payload: message.payload.clone(),
            });
        }
    }
    records
}
