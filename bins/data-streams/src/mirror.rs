//! In-memory copies of the two key-value buckets the workers write: job plans (for
//! `next_run_at`, `consecutive_failures` and skipped runs in job views) and request ledgers
//! (for `GET /quota` and the `over_budget` warning), kept current so reading one costs no NATS
//! round trip.
//!
//! Each copy is fed by an ephemeral *pull* consumer over the bucket's stream, starting from the
//! last value of every key. A pushed watch would lose the values the server sends before the
//! client's subscription is in place, and nats-server 2.9 does not keep ephemeral consumers
//! across a restart; a pull loses nothing, and when the consumer is gone (a restart) a new one
//! rebuilds the copy from scratch, so keys deleted meanwhile disappear too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use futures::StreamExt as _;
use newsflow_core::retry::Backoff;
use newsflow_nats::kv::open_bucket;
use newsflow_runtime::retry::{retry, Failure, RetryPolicy};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// A bucket's entries, decoded, by key.
pub struct Mirror<T> {
    bucket: &'static str,
    entries: RwLock<HashMap<String, T>>,
    current: AtomicBool,
}

impl<T: DeserializeOwned + Clone + Send + Sync + 'static> Mirror<T> {
    /// An empty copy of `bucket`, not current until [`Mirror::follow`] caught up.
    pub fn new(bucket: &'static str) -> Self {
        Self {
            bucket,
            entries: RwLock::new(HashMap::new()),
            current: AtomicBool::new(false),
        }
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<T> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries.get(key).cloned()
    }

    /// Every entry.
    pub fn all(&self) -> Vec<(String, T)> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    /// Whether the copy has caught up with the bucket and its watch is live.
    pub fn is_current(&self) -> bool {
        self.current.load(Ordering::Acquire)
    }

    /// Applies one stream message of the bucket to `entries`: a put sets its key, a delete or
    /// purge (`KV-Operation` header) removes it.
    fn apply(&self, entries: &mut HashMap<String, T>, message: &jetstream::Message) {
        let prefix = format!("$KV.{}.", self.bucket);
        let Some(key) = message.subject.as_str().strip_prefix(prefix.as_str()) else {
            return;
        };
        let removed = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get("KV-Operation"))
            .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
        if removed {
            entries.remove(key);
            return;
        }
        match serde_json::from_slice::<T>(&message.payload) {
            Ok(value) => {
                entries.insert(key.to_owned(), value);
            }
            Err(error) => {
                entries.remove(key);
                tracing::warn!(bucket = self.bucket, key, %error, "ignoring an entry that is not valid");
            }
        }
    }

    /// Opens the bucket (creating it if no worker did yet) and keeps the copy current until
    /// `shutdown`, starting the watch again whenever it ends.
    pub async fn follow(
        self: Arc<Self>,
        js: jetstream::Context,
        replicas: usize,
        description: &'static str,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let policy = RetryPolicy::new(Backoff::new(
            Duration::from_millis(500),
            Duration::from_secs(10),
        ));
        let what = format!("could not watch the {} bucket", self.bucket);
        let watched = retry(&policy, &shutdown, &what, || {
            let (mirror, js) = (Arc::clone(&self), js.clone());
            let shutdown = shutdown.clone();
            async move {
                let outcome = mirror.watch(&js, replicas, description, &shutdown).await;
                mirror.current.store(false, Ordering::Release);
                match outcome {
                    Ok(()) if shutdown.is_cancelled() => Ok(()),
                    Ok(()) => Err(Failure::Transient(anyhow::anyhow!("the watch ended"))),
                    Err(error) => Err(Failure::Transient(error)),
                }
            }
        })
        .await;
        // Giving up is not an option the policy allows; cancellation is a clean end.
        let _ = watched;
        Ok(())
    }

    async fn watch(
        &self,
        js: &jetstream::Context,
        replicas: usize,
        description: &str,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        open_bucket(js, self.bucket, description, replicas).await?;
        let stream = js.get_stream(format!("KV_{}", self.bucket)).await?;
        let (mut pending, mut messages) = follow_latest(&stream, self.bucket).await?;
        // The copy is rebuilt: keys deleted while no consumer was following are gone too.
        let mut fresh = HashMap::new();
        let mut caught_up = pending == 0;
        if caught_up {
            self.replace(fresh);
            fresh = HashMap::new();
        }
        tracing::info!(bucket = self.bucket, pending, "following the bucket");
        loop {
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            let Some(message) = next else {
                return Ok(());
            };
            let message = message?;
            if caught_up {
                let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
                self.apply(&mut entries, &message);
                continue;
            }
            self.apply(&mut fresh, &message);
            pending = message.info().map_or(0, |info| info.pending);
            if pending == 0 {
                caught_up = true;
                self.replace(std::mem::take(&mut fresh));
            }
        }
    }

    fn replace(&self, entries: HashMap<String, T>) {
        *self.entries.write().unwrap_or_else(PoisonError::into_inner) = entries;
        self.current.store(true, Ordering::Release);
    }
}

/// An ephemeral pull consumer of `bucket`'s stream that delivers the latest value of every
/// key and then each change, unacknowledged; with how many values the catch-up holds.
pub(crate) async fn follow_latest(
    stream: &jetstream::stream::Stream,
    bucket: &str,
) -> anyhow::Result<(u64, pull::Stream)> {
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::LastPerSubject,
            filter_subject: format!("$KV.{bucket}.>"),
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await?;
    let pending = consumer.cached_info().num_pending;
    let messages = consumer
        .stream()
        .max_messages_per_batch(1_000)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(15))
        .messages()
        .await?;
    Ok((pending, messages))
}
