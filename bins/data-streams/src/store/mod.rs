//! The sled store: jobs, batches, articles and the cross-job feed, with one writer for stream
//! data (the ingest task) so deletes and ingest never interleave.
//!
//! Trees and keys (job ids never contain a NUL byte, so `job\0` is an unambiguous prefix):
//! - `jobs`: `job` → [`JobRecord`] (desired state, spec, owner), written by the API.
//! - `job_status`: `job` → [`JobStatus`] (latest complete batch, last error), written by ingest.
//! - `batches`: `job\0batch(16)` → [`BatchRecord`].
//! - `articles`: `job\0batch(16)seq(4)` → the article's HTTP JSON.
//! - `feed`: `rev_time(8)article(16)job` → the key of the stored article, newest first.
//! - `feed_ref`: `job\0article(16)` → its `feed` key, to replace or delete it.
//! - `tombstones`: `job` → deletion time (ms): stream data of older batches is dropped.
//! - `dead_letters`: `stream_seq(8)` → a poison message kept for inspection.
//! - `awaiting_batches`: `job\0batch(16)` → (), batches whose complete marker came before all
//!   their articles (few; read at start-up instead of scanning every batch).
//! - `pruning`: `job\0batch(16)` → (), batches retention is deleting: written and flushed
//!   before the first deletion, removed after the last is flushed, finished at start-up.
//! - `batch_events`: `event id(16)` → a batch that reached a final status, for SSE replay.
//!
//! # Layout
//! - [`events`]: the time-ordered batch events behind SSE's `Last-Event-ID` replay.
//! - [`durability`]: the one flusher thread (group commit for every writer) and the stall watch.
//! - [`parse`]: stream messages understood, or poison.
//! - [`ingest`]: the writer of stream data: batches, markers, promotion, late articles.
//! - `removal`: dead letters, and deleting a job with everything stored for it.
//! - [`retention`]: pruning a job's batches beyond its `keep_batches`, abandoning markerless ones.
//! - `feed`: the cross-job feed's keys.
//! - `jobs`: job records, written by the API and the reconciler.
//! - [`job_index`]: the in-memory index of job records every job write keeps in step.
//! - [`changes`]: which job records changed, for the publisher that copies them to replicas.
//! - `read`: the API's reads.
//! - `records`: the stored records.

pub mod changes;
pub mod durability;
pub mod events;
mod feed;
pub mod ingest;
pub mod job_index;
mod jobs;
#[cfg(test)]
mod late_articles;
pub mod parse;
mod read;
mod records;
mod removal;
pub mod retention;
#[cfg(test)]
mod retention_tests;
#[cfg(test)]
pub(crate) mod testing;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use newsflow_core::{BatchId, JobId};

pub use durability::{CallGuard, Stall, StallWatch};
pub use ingest::{Ingest, Parsed};
pub use job_index::{IndexedJob, JobIndex, Owned};
pub use read::{ArticlePage, FeedFilter, StoredJson};
pub use records::{
    BatchRecord, DeadLetter, JobRecord, JobStatus, LastError, LatestBatch, MarkerRecord, WorkerRef,
};
pub use retention::Retention;

/// The store's trees.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    jobs: sled::Tree,
    job_status: sled::Tree,
    batches: sled::Tree,
    articles: sled::Tree,
    feed: sled::Tree,
    feed_ref: sled::Tree,
    tombstones: sled::Tree,
    dead_letters: sled::Tree,
    awaiting: sled::Tree,
    pruning: sled::Tree,
    batch_events: sled::Tree,
    event_clock: events::EventClock,
    job_lock: Arc<std::sync::Mutex<()>>,
    /// Every job record in memory, changed under `job_lock` by each job write.
    job_index: Arc<std::sync::RwLock<JobIndex>>,
    changes: Arc<changes::JobChanges>,
    flusher: durability::Flusher,
    watch: Arc<StallWatch>,
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Self::open_with(path, None)
    }

    /// Opens the store; `stall_file` is the test hook that holds every flush while that file
    /// exists.
    pub fn open_with(path: &Path, stall_file: Option<PathBuf>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("creating the data directory {}", path.display()))?;
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(256 * 1024 * 1024)
            // The flusher thread is the only one that flushes (see `durability`).
            .flush_every_ms(None)
            .open()
            .with_context(|| format!("opening the sled store at {}", path.display()))?;
        let watch = Arc::new(StallWatch::default());
        let flusher = durability::Flusher::start(db.clone(), watch.clone(), stall_file)
            .context("starting the store's flusher thread")?;
        let tree = |name: &str| {
            db.open_tree(name)
                .with_context(|| format!("opening the sled tree {name}"))
        };
        let batch_events = tree("batch_events")?;
        let jobs = tree("jobs")?;
        let job_index = Arc::new(std::sync::RwLock::new(jobs::load_index(&jobs)?));
        Ok(Self {
            event_clock: Self::event_clock_from(&batch_events)?,
            batch_events,
            jobs,
            job_index,
            job_status: tree("job_status")?,
            batches: tree("batches")?,
            articles: tree("articles")?,
            feed: tree("feed")?,
            feed_ref: tree("feed_ref")?,
            tombstones: tree("tombstones")?,
            dead_letters: tree("dead_letters")?,
            awaiting: tree("awaiting_batches")?,
            pruning: tree("pruning")?,
            db,
            job_lock: Default::default(),
            changes: Arc::default(),
            flusher,
            watch,
        })
    }

    /// Resolves once every write made before the call is durable (one flusher performs it,
    /// shared with every other caller waiting at the time).
    pub async fn flush(&self) -> anyhow::Result<()> {
        Ok(self.flusher.flush().await?)
    }

    /// The job records changed and not yet published to read replicas.
    pub fn job_changes(&self) -> &Arc<changes::JobChanges> {
        &self.changes
    }

    /// The flushes and store calls in progress, for the watchdog.
    pub fn stall_watch(&self) -> &Arc<StallWatch> {
        &self.watch
    }

    /// Records a store call for the watchdog until the guard is dropped.
    pub fn watched(&self, what: &'static str) -> CallGuard {
        self.watch.begin(what, 1)
    }

    /// Empties everything derived from the stream (keeping jobs and tombstones), for a rebuild.
    pub fn clear_stream_data(&self) -> anyhow::Result<()> {
        for tree in [
            &self.job_status,
            &self.batches,
            &self.articles,
            &self.feed,
            &self.feed_ref,
            &self.dead_letters,
            &self.awaiting,
            &self.pruning,
            &self.batch_events,
        ] {
            tree.clear().context("clearing a sled tree for a rebuild")?;
        }
        Ok(())
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// `job\0`.
fn job_prefix(job: &JobId) -> Vec<u8> {
    let mut key = Vec::with_capacity(job.as_str().len() + 1);
    key.extend_from_slice(job.as_str().as_bytes());
    key.push(0);
    key
}

/// `job\0batch`.
fn batch_key(job: &JobId, batch: BatchId) -> Vec<u8> {
    let mut key = job_prefix(job);
    key.extend_from_slice(&batch.to_bytes());
    key
}

/// `job\0batch seq`.
fn article_key(job: &JobId, batch: BatchId, seq: u32) -> Vec<u8> {
    let mut key = batch_key(job, batch);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The key just past every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> anyhow::Result<T> {
    serde_json::from_slice(bytes).with_context(|| format!("decoding a stored {what}"))
}

fn encode<T: serde::Serialize>(value: &T) -> anyhow::Result<Vec<u8>> {
    serde_json::to_vec(value).context("encoding a record")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bounds_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"ab\0"), b"ab\x01".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert!(
            prefix_end(b"job\0").as_slice()
                > article_key(
                    &JobId::parse("job").expect("valid"),
                    BatchId::generate(),
                    u32::MAX
                )
                .as_slice()
        );
    }
}
