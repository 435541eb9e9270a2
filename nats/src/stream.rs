//! Idempotent provisioning of the `NEWS` stream and of the durable pull consumer.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::subjects;

/// How the `NEWS` stream is configured.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// 1 by default, 3 on a cluster.
    pub replicas: usize,
    /// How long messages are kept.
    pub max_age: Duration,
    /// How long the server remembers `Nats-Msg-Id`s: longer than any publish retry.
    pub duplicate_window: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(300),
        }
    }
}

/// Provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The server refused or did not answer.
    #[error("could not provision {what}: {source}")]
    JetStream {
        /// What was being provisioned.
        what: &'static str,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
}

fn config(settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: subjects::STREAM.to_owned(),
        subjects: vec![
            subjects::ARTICLES_WILDCARD.to_owned(),
            subjects::BATCHES_WILDCARD.to_owned(),
        ],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: settings.max_age,
        duplicate_window: settings.duplicate_window,
        num_replicas: settings.replicas,
        description: Some("newsflow: fetched articles and batch markers".to_owned()),
        ..Default::default()
    }
}

/// Creates the stream, or brings an existing one's settings in line. Safe to call from every
/// process at start-up, at the same time: the server accepts a create identical to an
/// existing stream. One attempt: callers retry it (JetStream may still be starting) with
/// `newsflow_runtime::retry`.
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<jetstream::stream::Stream, ProvisionError> {
    let wanted = config(settings);
    let err = |source: async_nats::Error| ProvisionError::JetStream {
        what: "the NEWS stream",
        source,
    };
    let mut existing = js
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|e| err(e.into()))?;
    let info = existing.info().await.map_err(|e| err(e.into()))?;
    let current = &info.config;
    if current.max_age != wanted.max_age
        || current.duplicate_window != wanted.duplicate_window
        || current.num_replicas != wanted.num_replicas
        || current.subjects != wanted.subjects
    {
        tracing::info!("updating the NEWS stream's settings");
        js.update_stream(wanted).await.map_err(|e| err(e.into()))?;
    }
    Ok(existing)
}

/// Settings of the durable pull consumer of data-streams.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// The durable name.
    pub durable: String,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// How many times a message is delivered before the server gives up on it.
    pub max_deliver: i64,
    /// How many messages may be delivered and not yet acked.
    pub max_ack_pending: i64,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            durable: "data-streams".to_owned(),
            ack_wait: Duration::from_secs(10),
            max_deliver: 10,
            max_ack_pending: 20_000,
        }
    }
}

/// Binds to the durable consumer, creating it when absent: the whole stream, in order.
pub async fn ensure_consumer(
    stream: &jetstream::stream::Stream,
    settings: &ConsumerSettings,
) -> Result<consumer::PullConsumer, ProvisionError> {
    let config = consumer::pull::Config {
        durable_name: Some(settings.durable.clone()),
        ack_policy: consumer::AckPolicy::Explicit,
        deliver_policy: consumer::DeliverPolicy::All,
        ack_wait: settings.ack_wait,
        max_deliver: settings.max_deliver,
        max_ack_pending: settings.max_ack_pending,
        description: Some("data-streams: stream into sled".to_owned()),
        ..Default::default()
    };
    stream
        .get_or_create_consumer(&settings.durable, config)
        .await
        .map_err(|e| ProvisionError::JetStream {
            what: "the durable consumer",
            source: e.into(),
        })
}

/// Deletes the durable consumer (for a rebuild from the start of the stream); absent is fine.
pub async fn delete_consumer(
    stream: &jetstream::stream::Stream,
    durable: &str,
) -> Result<(), ProvisionError> {
    match stream.delete_consumer(durable).await {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("not found") => Ok(()),
        Err(e) => Err(ProvisionError::JetStream {
            what: "the durable consumer (delete)",
            source: e.into(),
        }),
    }
}
