//! The JetStream ceilings, with async-nats and nothing of newsflow in the way: pipelined
//! publish, durable pull consume + ack, and consume → sled batch → flush → ack.

use std::collections::VecDeque;
use std::future::IntoFuture as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use futures::{FutureExt as _, StreamExt as _};
use newsflow_nats::publish::Outgoing;
use serde::Serialize;

/// How many publishes may await their ack at once in the ceiling (the client's default cap
/// of pending acks is 5,000).
pub const PUBLISH_WINDOW: usize = 4096;
/// Messages per pull and per group commit, as data-streams does.
pub const GROUP: usize = 1000;

/// The publish message of `outgoing`, headers included.
pub fn publish_message(outgoing: &Outgoing) -> PublishMessage {
    let mut publish = PublishMessage::build()
        .message_id(&outgoing.msg_id)
        .payload(outgoing.payload.clone());
    for (name, value) in &outgoing.headers {
        publish = publish.header(*name, value.as_str());
    }
    publish
}

/// What a publish run did.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Published {
    /// Messages acknowledged.
    pub messages: u64,
    /// Of those, duplicates.
    pub duplicates: u64,
    /// Seconds from the first send to the last ack.
    pub seconds: f64,
}

/// Publishes `messages` keeping up to `window` acks pending, and awaits every ack.
pub async fn publish_pipelined(
    js: &jetstream::Context,
    messages: impl IntoIterator<Item = Outgoing>,
    window: usize,
) -> anyhow::Result<Published> {
    let started = Instant::now();
    let mut pending = VecDeque::with_capacity(window);
    let mut published = Published {
        messages: 0,
        duplicates: 0,
        seconds: 0.0,
    };
    let mut settle = |ack: Result<jetstream::publish::PublishAck, _>| -> anyhow::Result<()> {
        let ack: jetstream::publish::PublishAck = ack.context("awaiting a publish ack")?;
        published.messages += 1;
        published.duplicates += u64::from(ack.duplicate);
        Ok(())
    };
    for message in messages {
        if pending.len() >= window {
            if let Some(ack) = pending.pop_front() {
                let ack: jetstream::context::PublishAckFuture = ack;
                settle(ack.into_future().await)?;
            }
        }
        let ack = js
            .send_publish(message.subject.clone(), publish_message(&message))
            .await
            .with_context(|| format!("publishing {}", message.msg_id))?;
        pending.push_back(ack);
    }
    while let Some(ack) = pending.pop_front() {
        settle(ack.into_future().await)?;
    }
    published.seconds = started.elapsed().as_secs_f64();
    Ok(published)
}

/// A scratch stream configured like `NEWS` (file storage, limits, duplicate window) on its
/// own subjects, for the publish ceiling.
pub async fn scratch_stream(
    js: &jetstream::Context,
    name: &str,
    subjects: &str,
) -> anyhow::Result<stream::Stream> {
    let _ = js.delete_stream(name).await;
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![subjects.to_owned()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: Duration::from_secs(7 * 24 * 3600),
        duplicate_window: Duration::from_secs(300),
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating the stream {name}"))
}

/// What a consume run did.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Consumed {
    /// Messages acknowledged.
    pub messages: u64,
    /// Group commits (sled runs only).
    pub groups: u64,
    /// Seconds from creating the consumer to the last ack flushed.
    pub seconds: f64,
}

/// Where a consume run puts messages before acknowledging them.
pub enum Sink<'a> {
    /// Nowhere: ack at once.
    Nothing,
    /// A sled tree: apply the group as one batch, flush, then ack the group.
    Sled(&'a sled::Db, &'a sled::Tree),
}

/// Creates the durable pull consumer `durable` over all of `stream` (configured as
/// data-streams' own) and consumes `expected` messages into `sink`, acking each.
pub async fn consume(
    client: &async_nats::Client,
    stream: &stream::Stream,
    durable: &str,
    expected: u64,
    sink: Sink<'_>,
) -> anyhow::Result<Consumed> {
    let started = Instant::now();
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(durable.to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy: consumer::DeliverPolicy::All,
            ack_wait: Duration::from_secs(30),
            max_deliver: 10,
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating the consumer {durable}"))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(GROUP)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .context("pulling")?;
    let mut done = Consumed {
        messages: 0,
        groups: 0,
        seconds: 0.0,
    };
    while done.messages < expected {
        let first = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .with_context(|| format!("no message for 30 s after {} of {expected}", done.messages))?
            .context("the pull ended")?
            .context("a pull error")?;
        let mut group = vec![first];
        while group.len() < GROUP {
            match messages.next().now_or_never() {
                Some(Some(Ok(message))) => group.push(message),
                _ => break,
            }
        }
        if let Sink::Sled(db, tree) = &sink {
            let mut batch = sled::Batch::default();
            for message in &group {
                let key = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.as_str().as_bytes().to_vec())
                    .unwrap_or_else(|| message.subject.as_bytes().to_vec());
                batch.insert(key, message.payload.as_ref());
            }
            tree.apply_batch(batch).context("applying a sled batch")?;
            // Synchronous flush on a blocking thread, as data-streams does: sled 0.34's
            // flush_async deadlocks when several run at once.
            let flusher = sled::Db::clone(db);
            tokio::task::spawn_blocking(move || flusher.flush())
                .await
                .context("joining the sled flush")?
                .context("flushing sled")?;
            done.groups += 1;
        }
        for message in &group {
            message
                .ack()
                .await
                .map_err(|e| anyhow::anyhow!("acking: {e}"))?;
        }
        done.messages += group.len() as u64;
    }
    client.flush().await.context("flushing acks")?;
    done.seconds = started.elapsed().as_secs_f64();
    Ok(done)
}

/// A sled database configured as data-streams' store is.
pub fn open_sled(dir: &Path) -> anyhow::Result<(sled::Db, sled::Tree)> {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(256 * 1024 * 1024)
        .flush_every_ms(Some(1000))
        .open()
        .with_context(|| format!("opening sled at {}", dir.display()))?;
    let tree = db.open_tree("articles").context("opening a sled tree")?;
    Ok((db, tree))
}

/// Messages the stream `name` holds now.
pub async fn stream_messages(js: &jetstream::Context, name: &str) -> anyhow::Result<u64> {
    let mut stream = js
        .get_stream(name)
        .await
        .with_context(|| format!("looking up the stream {name}"))?;
    Ok(stream
        .info()
        .await
        .with_context(|| format!("reading the stream {name}"))?
        .state
        .messages)
}
