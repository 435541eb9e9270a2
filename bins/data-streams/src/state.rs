//! State shared by the HTTP handlers, the ingest task and the reconciler.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use newsflow_core::{BatchId, JobId, Secret};
use tokio::sync::{mpsc, oneshot};

use crate::store::Store;

/// What the HTTP side asks of the ingest task, the one writer of stream data.
#[derive(Debug)]
pub enum IngestCommand {
    /// Delete a job and everything stored for it; answers whether it existed.
    DeleteJob(JobId, oneshot::Sender<anyhow::Result<bool>>),
}

/// Everything the tasks share.
pub struct Shared {
    /// The store.
    pub store: Store,
    /// The NATS client, once connected.
    pub nats: OnceLock<async_nats::Client>,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Whether the durable consumer is bound.
    pub consumer_bound: AtomicBool,
    /// Serialized responses of complete (immutable) batches.
    pub cache: BatchCache,
    /// To the ingest task.
    pub ingest: mpsc::Sender<IngestCommand>,
    /// The bearer token every route but `/healthz` needs, when set.
    pub api_token: Option<Secret>,
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// Requests that may be in flight at once (beyond: 503 `overloaded`).
    pub in_flight: tokio::sync::Semaphore,
    /// Why the store is stalled, once the watchdog found it so (the process is about to exit).
    pub store_stalled: OnceLock<String>,
    /// Which background task died, and how, once one did (the process is stopping).
    pub dead_task: OnceLock<String>,
    /// What a job that did not choose `keep_batches` keeps (job views show the effective value).
    pub default_keep_batches: newsflow_core::KeepBatches,
    /// What workers say about the jobs they run.
    pub plans: std::sync::Arc<crate::mirror::Mirror<newsflow_nats::wire::JobPlan>>,
    /// The request ledgers of the NewsAPI keys workers use.
    pub budgets: std::sync::Arc<crate::mirror::Mirror<newsflow_core::budget::Ledger>>,
}

/// The settings [`Shared`] is built from.
#[derive(Debug, Clone)]
pub struct SharedSettings {
    /// The bearer token every route but `/healthz` needs, when set.
    pub api_token: Option<Secret>,
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// Requests that may be in flight at once.
    pub max_in_flight: usize,
    /// What a job that did not choose `keep_batches` keeps.
    pub default_keep_batches: newsflow_core::KeepBatches,
}

impl Shared {
    /// Shared state over `store`, with `ingest` leading to the store writer; NATS not yet
    /// connected, nothing bound, nothing mirrored.
    pub fn new(
        store: Store,
        ingest: mpsc::Sender<IngestCommand>,
        settings: SharedSettings,
    ) -> Self {
        Self {
            store,
            nats: OnceLock::new(),
            metrics: Metrics::default(),
            consumer_bound: AtomicBool::new(false),
            cache: BatchCache::default(),
            ingest,
            api_token: settings.api_token,
            max_body_bytes: settings.max_body_bytes,
            in_flight: tokio::sync::Semaphore::new(settings.max_in_flight),
            store_stalled: OnceLock::new(),
            dead_task: OnceLock::new(),
            default_keep_batches: settings.default_keep_batches,
            plans: std::sync::Arc::new(crate::mirror::Mirror::new(newsflow_nats::kv::PLANS_BUCKET)),
            budgets: std::sync::Arc::new(crate::mirror::Mirror::new(
                newsflow_nats::kv::BUDGET_BUCKET,
            )),
        }
    }

    /// Whether NATS is connected right now.
    pub fn nats_connected(&self) -> bool {
        self.nats
            .get()
            .is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected)
    }
}

/// Counters, exposed in Prometheus text format.
#[derive(Default)]
pub struct Metrics {
    /// Articles written to sled.
    pub articles_stored: AtomicU64,
    /// Markers recorded, by outcome.
    pub batches_promoted: AtomicU64,
    /// Failed markers.
    pub batches_failed: AtomicU64,
    /// Markers whose count did not match.
    pub batches_incomplete: AtomicU64,
    /// Poison messages terminated and kept.
    pub poison_messages: AtomicU64,
    /// Messages dropped because their job was deleted.
    pub messages_of_deleted_jobs: AtomicU64,
    /// Messages acknowledged after a durable write.
    pub messages_acked: AtomicU64,
    /// Messages negatively acknowledged (store trouble; redelivered).
    pub messages_naked: AtomicU64,
    /// Group commits (one flush each).
    pub ingest_groups: AtomicU64,
    /// Microseconds spent flushing.
    pub flush_micros: AtomicU64,
    /// Heartbeats that could not be parsed.
    pub invalid_heartbeats: AtomicU64,
    /// Start commands acknowledged.
    pub starts_acked: AtomicU64,
    /// Stop commands sent to fence or stop a worker.
    pub stops_sent: AtomicU64,
    /// Commands without a positive answer.
    pub commands_failed: AtomicU64,
    /// Read responses served from the batch cache.
    pub cache_hits: AtomicU64,
    /// Batches deleted by retention (beyond their job's `keep_batches`).
    pub batches_pruned: AtomicU64,
}

impl Metrics {
    /// Adds one.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus exposition text, plus the gauges given.
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let counters: [(&str, &str, &AtomicU64); 16] = [
            (
                "newsflow_batches_pruned_total",
                "Batches deleted with their articles because their job keeps newer ones.",
                &self.batches_pruned,
            ),
            (
                "newsflow_articles_stored_total",
                "Articles written to the store.",
                &self.articles_stored,
            ),
            (
                "newsflow_batches_promoted_total",
                "Complete batches that became a job's latest.",
                &self.batches_promoted,
            ),
            (
                "newsflow_batches_failed_total",
                "Failed batch markers.",
                &self.batches_failed,
            ),
            (
                "newsflow_batches_incomplete_total",
                "Complete markers whose article count did not match the store.",
                &self.batches_incomplete,
            ),
            (
                "newsflow_poison_messages_total",
                "Stream messages terminated as poison and kept in /dead-letters.",
                &self.poison_messages,
            ),
            (
                "newsflow_messages_of_deleted_jobs_total",
                "Stream messages dropped because their job was deleted.",
                &self.messages_of_deleted_jobs,
            ),
            (
                "newsflow_messages_acked_total",
                "Stream messages acknowledged after a durable write.",
                &self.messages_acked,
            ),
            (
                "newsflow_messages_naked_total",
                "Stream messages negatively acknowledged for redelivery.",
                &self.messages_naked,
            ),
            (
                "newsflow_ingest_groups_total",
                "Group commits (one flush each).",
                &self.ingest_groups,
            ),
            (
                "newsflow_ingest_flush_microseconds_total",
                "Time spent flushing the store.",
                &self.flush_micros,
            ),
            (
                "newsflow_invalid_heartbeats_total",
                "Heartbeats that could not be parsed.",
                &self.invalid_heartbeats,
            ),
            (
                "newsflow_starts_acked_total",
                "Start commands acknowledged by a worker.",
                &self.starts_acked,
            ),
            (
                "newsflow_stops_sent_total",
                "Stop commands sent to workers.",
                &self.stops_sent,
            ),
            (
                "newsflow_commands_failed_total",
                "Commands that got no positive answer.",
                &self.commands_failed,
            ),
            (
                "newsflow_read_cache_hits_total",
                "Article reads served from the batch cache.",
                &self.cache_hits,
            ),
        ];
        let mut out = String::with_capacity(4096);
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

/// Which page of which batch a cached response is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageKey {
    /// The job.
    pub job: JobId,
    /// The batch.
    pub batch: BatchId,
    /// The seq the page starts after.
    pub after: Option<u32>,
    /// The page size.
    pub limit: usize,
}

/// Serialized pages of complete batches. A complete batch never changes, so an entry is
/// valid until its job is deleted; the cache is bounded by dropping everything when full.
#[derive(Default)]
pub struct BatchCache {
    pages: Mutex<HashMap<PageKey, Bytes>>,
}

const MAX_CACHED_PAGES: usize = 4096;

impl BatchCache {
    /// A cached page.
    pub fn get(&self, key: &PageKey) -> Option<Bytes> {
        self.pages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Caches a page.
    pub fn put(&self, key: PageKey, body: Bytes) {
        let mut pages = self
            .pages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pages.len() >= MAX_CACHED_PAGES {
            pages.clear();
        }
        pages.insert(key, body);
    }

    /// Forgets the pages of a batch retention deleted.
    pub fn forget_batch(&self, job: &JobId, batch: newsflow_core::BatchId) {
        self.pages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|key, _| !(&key.job == job && key.batch == batch));
    }

    /// Forgets a deleted job's pages.
    pub fn forget_job(&self, job: &JobId) {
        self.pages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|key, _| &key.job != job);
    }
}
