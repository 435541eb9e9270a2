//! The one writer of stream data: turns stream messages into stored batches and promotes
//! complete batches (what it sets aside or deletes is in `removal`).

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use newsflow_core::{
    BatchId, BatchMarker, BatchStatus, JobId, JobSpec, JobState, MarkerStatus, Promotion,
};
use newsflow_nats::subjects;

use super::feed::{hex_id, rev_time, FeedFields};
pub use super::parse::{parse, Parsed, MAX_SEQ};
use super::{
    article_key, batch_key, decode, encode, job_prefix, prefix_end, BatchRecord, JobRecord,
    JobStatus, LastError, LatestBatch, MarkerRecord, Store,
};

/// What applying a message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// An article was stored (or was already).
    Article,
    /// A marker was recorded with this decision.
    Marker(Promotion, JobId),
    /// The job was deleted after this batch started: dropped.
    Deleted,
    /// Refused, and kept as a dead letter for this reason: an article beyond its batch's
    /// complete marker, or a second, different article for a seq already stored.
    Refused(String),
}

/// The ingest writer's state.
pub struct Ingest {
    pub(super) store: Store,
    pub(super) tombstones: HashMap<JobId, u64>,
    /// Batches known to be stored, with the article count of their `complete` marker once
    /// there is one: no article at or past that seq is ever stored.
    pub(super) known_batches: HashMap<Vec<u8>, Option<u32>>,
    /// Batches whose `complete` marker arrived before all their articles: after a restart,
    /// JetStream redelivers the unacknowledged articles only once their ack wait is over, after
    /// newer messages (the marker among them). Each late article re-checks its batch.
    pub(super) awaiting_articles: HashSet<Vec<u8>>,
    pub(super) dead_letter_count: usize,
    /// How many batches a job keeps, and when a markerless batch is abandoned.
    pub(super) retention: super::Retention,
    /// Jobs that received a marker since retention last ran: their oldest batches may now be
    /// beyond what they keep.
    pub(super) prune_due: HashSet<JobId>,
    /// Batches whose pruning a crash interrupted (`pruning` tree keys): their data is deleted
    /// again at start-up, and their marker removed once that is durable.
    pub(super) interrupted_prunes: Vec<Vec<u8>>,
    /// Batch events stored since the writer last took them: published once flushed.
    pub(super) new_events: Vec<(super::events::EventId, super::events::StoredBatchEvent)>,
}

impl Ingest {
    /// Starts writing to `store`.
    pub fn new(store: Store) -> anyhow::Result<Self> {
        let mut tombstones = HashMap::new();
        for entry in store.tombstones.iter() {
            let (key, value) = entry.context("reading tombstones")?;
            if let (Ok(job), Ok(bytes)) = (
                JobId::parse(&String::from_utf8_lossy(&key)),
                <[u8; 8]>::try_from(value.as_ref()),
            ) {
                tombstones.insert(job, u64::from_be_bytes(bytes));
            }
        }
        let dead_letter_count = store.dead_letters.len();
        let mut awaiting_articles = HashSet::new();
        for key in store.awaiting.iter().keys() {
            awaiting_articles.insert(key.context("reading batches awaiting articles")?.to_vec());
        }
        let mut ingest = Self {
            store,
            tombstones,
            known_batches: HashMap::new(),
            awaiting_articles,
            dead_letter_count,
            retention: super::Retention::default(),
            prune_due: HashSet::new(),
            interrupted_prunes: Vec::new(),
            new_events: Vec::new(),
        };
        ingest.finish_interrupted_prunes()?;
        Ok(ingest)
    }

    /// Applies one parsed message (not a poison one), which the stream holds at `stream_seq`.
    /// Not durable until the store is flushed.
    pub fn apply(&mut self, parsed: Parsed, stream_seq: u64) -> anyhow::Result<Applied> {
        match parsed {
            Parsed::Article {
                job,
                batch,
                seq,
                json,
            } => {
                if self.is_deleted(&job, batch) {
                    return Ok(Applied::Deleted);
                }
                if let Some(count) = self.ensure_batch(&job, batch, None)? {
                    if seq >= count {
                        return Ok(Applied::Refused(format!(
                            "article seq {seq} is past the batch's complete marker, which counts {count} articles"
                        )));
                    }
                }
                let stored = self
                    .store
                    .articles
                    .compare_and_swap(
                        article_key(&job, batch, seq),
                        None as Option<&[u8]>,
                        Some(json.as_slice()),
                    )
                    .context("storing an article")?;
                if let Err(clash) = stored {
                    // A redelivery carries the same bytes; anything else under this seq (a
                    // second publisher, another message id) must not replace what was stored.
                    if clash.current.as_deref() != Some(json.as_slice()) {
                        return Ok(Applied::Refused(format!(
                            "article seq {seq} of this batch is already stored with different content; the first is kept"
                        )));
                    }
                }
                if self.awaiting_articles.contains(&batch_key(&job, batch)) {
                    self.recheck_marker(&job, batch)?;
                }
                Ok(Applied::Article)
            }
            Parsed::Marker { marker, spec } => {
                if self.is_deleted(&marker.job_id, marker.batch_id) {
                    return Ok(Applied::Deleted);
                }
                self.apply_marker(&marker, spec.map(|spec| *spec), stream_seq)
            }
            Parsed::Poison(reason) => anyhow::bail!("a poison message reached apply: {reason}"),
        }
    }

    /// The batch events stored since the last call, oldest first: the writer publishes them
    /// once the flush that makes them durable is done.
    pub fn take_events(
        &mut self,
    ) -> Vec<(super::events::EventId, super::events::StoredBatchEvent)> {
        std::mem::take(&mut self.new_events)
    }

    fn is_deleted(&self, job: &JobId, batch: BatchId) -> bool {
        self.tombstones
            .get(job)
            .is_some_and(|&deleted_at| batch.timestamp_ms() <= deleted_at)
    }

    /// Stores the batch's record if it is new; returns the article count of its `complete`
    /// marker, when it has one.
    fn ensure_batch(
        &mut self,
        job: &JobId,
        batch: BatchId,
        started_at: Option<time::OffsetDateTime>,
    ) -> anyhow::Result<Option<u32>> {
        let key = batch_key(job, batch);
        if let Some(&count) = self.known_batches.get(&key) {
            return Ok(count);
        }
        let mut count = None;
        if let Some(stored) = self.store.batches.get(&key).context("reading a batch")? {
            count = complete_count(&decode(&stored, "batch")?);
        } else {
            let started_at = started_at.unwrap_or_else(|| {
                time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(batch.timestamp_ms()) * 1_000_000,
                )
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
            });
            self.store
                .batches
                .insert(
                    &key,
                    encode(&BatchRecord {
                        started_at,
                        marker: None,
                        abandoned: false,
                    })?,
                )
                .context("storing a batch")?;
        }
        self.remember_batch(key, count);
        Ok(count)
    }

    fn remember_batch(&mut self, key: Vec<u8>, complete_count: Option<u32>) {
        if self.known_batches.len() > 100_000 {
            self.known_batches.clear();
        }
        self.known_batches.insert(key, complete_count);
    }

    /// Takes out of a batch the articles at or past its complete marker's count (a publisher
    /// sent more than it counted), keeping each as a dead letter: a complete batch is exactly
    /// what its marker says.
    fn refuse_articles_past(
        &mut self,
        job: &JobId,
        batch: BatchId,
        count: u32,
        stream_seq: u64,
    ) -> anyhow::Result<()> {
        let prefix = batch_key(job, batch);
        let extra: Vec<_> = self
            .store
            .articles
            .range(article_key(job, batch, count)..prefix_end(&prefix))
            .collect::<Result<_, _>>()
            .context("reading articles past a marker's count")?;
        for (key, json) in extra {
            let seq_bytes = key.get(key.len().saturating_sub(4)..).unwrap_or_default();
            let seq = <[u8; 4]>::try_from(seq_bytes).map_or(0, u32::from_be_bytes);
            let mut letter_key = stream_seq.to_be_bytes().to_vec();
            letter_key.extend_from_slice(&seq.to_be_bytes());
            self.keep_dead_letter(
                letter_key,
                stream_seq,
                &subjects::articles(job, batch),
                &format!("article seq {seq} is past the batch's complete marker, which counts {count} articles"),
                &json,
            )?;
            self.store
                .articles
                .remove(key)
                .context("removing an article past a marker's count")?;
        }
        Ok(())
    }

    fn apply_marker(
        &mut self,
        marker: &BatchMarker,
        spec: Option<JobSpec>,
        stream_seq: u64,
    ) -> anyhow::Result<Applied> {
        let job = &marker.job_id;
        if marker.status == MarkerStatus::Complete {
            self.refuse_articles_past(job, marker.batch_id, marker.article_count, stream_seq)?;
        }
        let stored = if marker.article_count == 0 {
            0
        } else {
            let from = article_key(job, marker.batch_id, 0);
            let to = article_key(job, marker.batch_id, marker.article_count);
            self.store.articles.range(from..to).keys().count() as u32
        };
        let mut status: JobStatus = self.store.job_status(job)?;
        let decision = Promotion::decide(marker, stored, status.latest.map(|latest| latest.id));
        self.ensure_batch(job, marker.batch_id, Some(marker.started_at))?;
        let record = BatchRecord {
            started_at: marker.started_at,
            marker: Some(MarkerRecord {
                said: marker.status,
                status: decision.status(),
                article_count: marker.article_count,
                stored,
                finished_at: marker.finished_at,
                error: marker.error.clone(),
                fetched_count: marker.fetched_count,
                dropped: marker.dropped.clone(),
            }),
            abandoned: false,
        };
        let key = batch_key(job, marker.batch_id);
        self.remember_batch(key.clone(), complete_count(&record));
        if record.marker.as_ref().is_some_and(awaits_articles) {
            self.await_articles(&key)?;
        } else {
            self.stop_awaiting(&key)?;
        }
        let previous = self
            .store
            .batches
            .get(&key)
            .context("reading a batch")?
            .map(|stored| decode::<BatchRecord>(&stored, "batch"))
            .transpose()?
            .and_then(|previous| previous.marker.map(|m| m.status));
        if previous == Some(decision.status()) {
            // A redelivered marker: same status, no new event.
            self.store
                .batches
                .insert(key, encode(&record)?)
                .context("storing a batch marker")?;
        } else {
            let event = super::events::StoredBatchEvent {
                job_id: job.clone(),
                batch_id: marker.batch_id,
                record: record.clone(),
            };
            let id = self
                .store
                .record_final_batch(&key, &encode(&record)?, &event)?;
            self.new_events.push((id, event));
        }
        let failure = match decision {
            Promotion::Promote => {
                self.index_batch(job, marker.batch_id)?;
                status.latest = Some(LatestBatch {
                    id: marker.batch_id,
                    completed_at: marker.finished_at,
                    article_count: marker.article_count,
                });
                None
            }
            Promotion::Superseded => None,
            Promotion::Failed => {
                let error = marker.error.clone().unwrap_or_else(|| {
                    newsflow_core::ErrorInfo::new("failed", "the run failed without saying why")
                });
                Some((error.code, error.message))
            }
            Promotion::CountMismatch { expected, stored } => Some((
                "incomplete_batch".to_owned(),
                format!(
                    "the batch's marker counts {expected} articles but {stored} reached the store"
                ),
            )),
        };
        if let Some((code, message)) = failure {
            if status
                .last_error
                .as_ref()
                .is_none_or(|last| last.at <= marker.finished_at)
            {
                status.last_error = Some(LastError {
                    at: marker.finished_at,
                    code,
                    message,
                });
            }
        }
        self.store
            .job_status
            .insert(job.as_str(), encode(&status)?)
            .context("storing a job status")?;
        if let Some(spec) = spec {
            self.recreate_lost_job(spec, marker)?;
        }
        self.prune_due.insert(job.clone());
        Ok(Applied::Marker(decision, job.clone()))
    }

    /// Decides again on a batch whose `complete` marker came before all its articles, now that
    /// one more arrived: once every article is stored it is complete (and the latest, unless a
    /// newer batch already is), and the `incomplete_batch` error its early marker recorded is
    /// withdrawn. Nothing changes while articles are still missing.
    fn recheck_marker(&mut self, job: &JobId, batch: BatchId) -> anyhow::Result<()> {
        let key = batch_key(job, batch);
        let Some(value) = self.store.batches.get(&key).context("reading a batch")? else {
            self.stop_awaiting(&key)?;
            return Ok(());
        };
        let record: BatchRecord = decode(&value, "batch")?;
        let Some(early) = record.marker.filter(awaits_articles) else {
            self.stop_awaiting(&key)?;
            return Ok(());
        };
        let from = article_key(job, batch, 0);
        let to = article_key(job, batch, early.article_count);
        if (self.store.articles.range(from..to).keys().count() as u32) < early.article_count {
            return Ok(());
        }
        let marker = BatchMarker {
            job_id: job.clone(),
            batch_id: batch,
            status: early.said,
            article_count: early.article_count,
            started_at: record.started_at,
            finished_at: early.finished_at,
            error: early.error,
            fetched_count: early.fetched_count,
            dropped: early.dropped,
        };
        let Applied::Marker(decision, _) = self.apply_marker(&marker, None, 0)? else {
            return Ok(());
        };
        let mut status: JobStatus = self.store.job_status(job)?;
        if status
            .last_error
            .as_ref()
            .is_some_and(|last| last.code == "incomplete_batch" && last.at == early.finished_at)
        {
            status.last_error = None;
            self.store
                .job_status
                .insert(job.as_str(), encode(&status)?)
                .context("storing a job status")?;
        }
        tracing::info!(%job, %batch, ?decision, "the late articles of a batch arrived; decided again");
        Ok(())
    }

    /// A marker for a job the store does not know (and did not delete): the store was lost
    /// or rebuilt. The spec the publisher attached brings the job back, stopped, so an
    /// operator decides whether it runs again.
    fn recreate_lost_job(&self, spec: JobSpec, marker: &BatchMarker) -> anyhow::Result<()> {
        if self.tombstones.contains_key(spec.id()) {
            return Ok(());
        }
        let record = JobRecord {
            spec,
            state: JobState::Stopped,
            worker: None,
            created_at: marker.started_at,
            updated_at: newsflow_core::now_utc(),
        };
        if self.store.create_job(&record)? {
            tracing::info!(job = %record.spec.id(), "recreated a job known only from the stream (stopped)");
        }
        Ok(())
    }

    /// Puts a newly complete batch's articles into the cross-job feed, replacing the job's
    /// older copy of each URL.
    fn index_batch(&mut self, job: &JobId, batch: BatchId) -> anyhow::Result<()> {
        let prefix = batch_key(job, batch);
        for entry in self
            .store
            .articles
            .range(prefix.clone()..prefix_end(&prefix))
        {
            let (article_key, json) = entry.context("reading a batch's articles")?;
            let fields: FeedFields<'_> =
                serde_json::from_slice(&json).context("decoding a stored article")?;
            let id = hex_id(&fields.id)?;
            let mut feed_key = Vec::with_capacity(24 + job.as_str().len());
            feed_key.extend_from_slice(&rev_time(fields.sort_time()).to_be_bytes());
            feed_key.extend_from_slice(&id);
            feed_key.extend_from_slice(job.as_str().as_bytes());
            let mut ref_key = job_prefix(job);
            ref_key.extend_from_slice(&id);
            if let Some(old) = self
                .store
                .feed_ref
                .insert(&ref_key, feed_key.as_slice())
                .context("indexing an article")?
            {
                if old.as_ref() != feed_key.as_slice() {
                    self.store
                        .feed
                        .remove(old)
                        .context("replacing an indexed article")?;
                }
            }
            // The feed points at the stored article rather than copying it: half the disk,
            // and half the bytes a restart replays.
            self.store
                .feed
                .insert(feed_key, article_key)
                .context("indexing an article")?;
        }
        Ok(())
    }
}

/// Whether a recorded marker said `complete` but found articles missing.
impl Ingest {
    /// Remembers, durably, that a batch's complete marker came before all its articles; the
    /// small `awaiting_batches` tree is what start-up reads, never the whole `batches` tree.
    fn await_articles(&mut self, key: &[u8]) -> anyhow::Result<()> {
        if self.awaiting_articles.insert(key.to_vec()) {
            self.store
                .awaiting
                .insert(key, &[])
                .context("remembering a batch awaiting articles")?;
        }
        Ok(())
    }

    /// Forgets a batch that no longer awaits articles.
    pub(super) fn stop_awaiting(&mut self, key: &[u8]) -> anyhow::Result<()> {
        if self.awaiting_articles.remove(key) {
            self.store
                .awaiting
                .remove(key)
                .context("forgetting a batch awaiting articles")?;
        }
        Ok(())
    }
}

/// The article count a batch's `complete` marker set, if it has one.
fn complete_count(record: &BatchRecord) -> Option<u32> {
    record
        .marker
        .as_ref()
        .filter(|marker| marker.said == MarkerStatus::Complete)
        .map(|marker| marker.article_count)
}

fn awaits_articles(marker: &MarkerRecord) -> bool {
    marker.said == MarkerStatus::Complete && marker.status == BatchStatus::Incomplete
}
