//! State shared by the HTTP handlers, the ingest task and the reconciler.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
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
    /// What `/metrics` shows.
    pub metrics: crate::metrics::Metrics,
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
    /// Live events for SSE streams.
    pub events: crate::events::Hub,
    /// Whether this instance controls jobs (holds the control lease) or is a read replica.
    pub role: crate::controller::Role,
    /// This instance's copy of the jobs bucket.
    pub jobs: std::sync::Arc<crate::replicate::Follower>,
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
    /// Open SSE streams at most (beyond: 503 `too_many_streams`).
    pub max_sse_clients: usize,
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
            metrics: crate::metrics::Metrics::default(),
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
            events: crate::events::Hub::new(settings.max_sse_clients),
            role: crate::controller::Role::default(),
            jobs: std::sync::Arc::default(),
        }
    }

    /// Whether NATS is connected right now.
    pub fn nats_connected(&self) -> bool {
        self.nats
            .get()
            .is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected)
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
