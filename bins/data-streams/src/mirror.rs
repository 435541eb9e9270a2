//! In-memory copies of the two key-value buckets the workers write: job plans (for
//! `next_run_at`, `consecutive_failures` and skipped runs in job views) and request ledgers
//! (for `GET /quota` and the `over_budget` warning). A watch keeps each copy current, so
//! reading one costs no NATS round trip.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
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

    fn apply(&self, entry: kv::Entry) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entry.operation != kv::Operation::Put {
            entries.remove(&entry.key);
            return;
        }
        match serde_json::from_slice::<T>(&entry.value) {
            Ok(value) => {
                entries.insert(entry.key, value);
            }
            Err(error) => {
                entries.remove(&entry.key);
                tracing::warn!(bucket = self.bucket, key = %entry.key, %error, "ignoring an entry that is not valid");
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
        let store = open_bucket(js, self.bucket, description, replicas).await?;
        let mut watch = store.watch_all().await?;
        // An empty bucket sends nothing: the copy is current once the watch is set up and
        // nothing is pending.
        let pending = store.status().await?.values();
        if pending == 0 {
            self.current.store(true, Ordering::Release);
        }
        loop {
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                next = watch.next() => next,
            };
            let Some(entry) = next else {
                return Ok(());
            };
            let entry = entry?;
            let caught_up = entry.delta == 0 || entry.seen_current;
            self.apply(entry);
            if caught_up {
                self.current.store(true, Ordering::Release);
            }
        }
    }
}
