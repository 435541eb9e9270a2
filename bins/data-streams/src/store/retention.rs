//! Retention, run by the one writer of stream data: a job keeps its newest `keep_batches`
//! batches (and always its latest complete one); older batches are deleted with their
//! articles and feed entries. A batch whose marker never came is abandoned once old enough:
//! incomplete, its articles deleted.
//!
//! Crash safety: sled makes each write durable only through a flush, and does not promise
//! that an interrupted sequence of writes to several trees comes back as a prefix of it. So a
//! batch is first named in the `pruning` tree and that is flushed; then its record, feed
//! entries and articles are deleted and flushed; only then is its `pruning` key removed. A
//! crash anywhere in between leaves the key, and start-up deletes the batch again (deleting is
//! idempotent): no orphan articles, no batch record whose articles are gone.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use newsflow_core::retention::{abandon_after, batches_to_prune, is_abandoned};
use newsflow_core::{BatchId, Interval, JobId, KeepBatches};

use super::feed::{hex_id, FeedFields};
use super::ingest::Ingest;
use super::{batch_key, decode, encode, job_prefix, prefix_end, BatchRecord};

/// The service-wide retention settings.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// What a job that did not choose `keep_batches` keeps.
    pub default_keep: KeepBatches,
    /// Overrides the per-job default abandon time (3 × interval, at least 10 minutes).
    pub abandon_after: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            default_keep: KeepBatches::DEFAULT,
            abandon_after: None,
        }
    }
}

/// A batch retention deleted, so its cached pages can be forgotten.
pub type Pruned = (JobId, BatchId);

impl Ingest {
    /// Sets how many batches jobs keep and when markerless batches are abandoned.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Deletes the batches beyond what each job keeps, for the jobs that received a marker
    /// since the last call (and finishes prunes a crash interrupted). Durable on return.
    pub async fn prune_due(&mut self) -> anyhow::Result<Vec<Pruned>> {
        let mut chosen = Vec::new();
        for key in std::mem::take(&mut self.interrupted_prunes) {
            chosen.push(split_batch_key(&key)?);
        }
        let mut jobs: Vec<JobId> = self.prune_due.drain().collect();
        jobs.sort();
        for job in jobs {
            for batch in self.batches_beyond_keep(&job)? {
                chosen.push((job.clone(), batch));
            }
        }
        self.prune(&chosen).await?;
        Ok(chosen)
    }

    /// The job's batches it no longer keeps.
    fn batches_beyond_keep(&self, job: &JobId) -> anyhow::Result<Vec<BatchId>> {
        let keep = self
            .store
            .job(job)?
            .and_then(|record| record.spec.keep_batches())
            .unwrap_or(self.retention.default_keep);
        let prefix = job_prefix(job);
        let mut newest_first = Vec::new();
        for key in self
            .store
            .batches
            .range(prefix.clone()..prefix_end(&prefix))
            .keys()
            .rev()
        {
            let key = key.context("listing a job's batches")?;
            newest_first.push(split_batch_key(&key)?.1);
        }
        if newest_first.len() <= keep.get() {
            return Ok(Vec::new());
        }
        let latest = self.store.job_status(job)?.latest.map(|latest| latest.id);
        Ok(batches_to_prune(&newest_first, keep, latest))
    }

    /// Deletes `batches` in the crash-safe order described in the module's documentation.
    pub(super) async fn prune(&mut self, batches: &[Pruned]) -> anyhow::Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        for (job, batch) in batches {
            self.store
                .pruning
                .insert(batch_key(job, *batch), &[])
                .context("noting a batch being pruned")?;
        }
        self.store.flush().await?;
        for (job, batch) in batches {
            self.delete_batch(job, *batch)?;
        }
        self.store.flush().await?;
        for (job, batch) in batches {
            self.store
                .pruning
                .remove(batch_key(job, *batch))
                .context("forgetting a pruned batch")?;
        }
        tracing::debug!(batches = batches.len(), "pruned batches beyond retention");
        Ok(())
    }

    /// Deletes a batch's record first (so readers stop listing it at once), then its feed
    /// entries (read from its articles, so before them), then its articles. Not durable until
    /// flushed.
    pub(super) fn delete_batch(&mut self, job: &JobId, batch: BatchId) -> anyhow::Result<()> {
        let key = batch_key(job, batch);
        self.store
            .batches
            .remove(&key)
            .context("deleting a pruned batch")?;
        self.known_batches.remove(&key);
        self.stop_awaiting(&key)?;
        for entry in self.store.articles.range(key.clone()..prefix_end(&key)) {
            let (article_key, json) = entry.context("reading a pruned batch's articles")?;
            self.unindex(job, &article_key, &json)?;
            self.store
                .articles
                .remove(article_key)
                .context("deleting a pruned article")?;
        }
        Ok(())
    }

    /// Removes the feed entry of a stored article, if the feed points at this very copy (a
    /// newer batch of the job may hold the same URL, and the feed then points at that one).
    fn unindex(&mut self, job: &JobId, article_key: &[u8], json: &[u8]) -> anyhow::Result<()> {
        // Stored articles were written from typed ones; one that does not decode was never
        // indexed either.
        let Ok(fields) = serde_json::from_slice::<FeedFields<'_>>(json) else {
            return Ok(());
        };
        let Ok(id) = hex_id(&fields.id) else {
            return Ok(());
        };
        let mut ref_key = job_prefix(job);
        ref_key.extend_from_slice(&id);
        let Some(feed_key) = self
            .store
            .feed_ref
            .get(&ref_key)
            .context("reading a feed ref")?
        else {
            return Ok(());
        };
        let points_here = self
            .store
            .feed
            .get(&feed_key)
            .context("reading a feed entry")?
            .is_some_and(|target| target.as_ref() == article_key);
        if points_here {
            self.store
                .feed
                .remove(&feed_key)
                .context("deleting a feed entry")?;
            self.store
                .feed_ref
                .remove(&ref_key)
                .context("deleting a feed ref")?;
        }
        Ok(())
    }

    /// At start-up: deletes again the batches a crash left in the `pruning` tree, so that
    /// nothing half-deleted is served; their keys go once that is flushed ([`Self::prune_due`]).
    pub(super) fn finish_interrupted_prunes(&mut self) -> anyhow::Result<()> {
        let keys: Vec<Vec<u8>> = self
            .store
            .pruning
            .iter()
            .keys()
            .map(|key| key.map(|key| key.to_vec()))
            .collect::<Result<_, _>>()
            .context("reading interrupted prunes")?;
        for key in &keys {
            let (job, batch) = split_batch_key(key)?;
            self.delete_batch(&job, batch)?;
            tracing::info!(%job, %batch, "finished pruning a batch a crash interrupted");
        }
        self.interrupted_prunes = keys;
        Ok(())
    }

    /// Abandons every batch without a marker older than its job's abandon time (`now_ms`,
    /// Unix ms): deletes its articles, then records it as abandoned (in that order, so that an
    /// interrupted sweep is finished by the next one). Not durable until flushed. Jobs that
    /// abandoned a batch are due for pruning too.
    pub fn sweep_abandoned(&mut self, now_ms: u64) -> anyhow::Result<usize> {
        let mut intervals: HashMap<JobId, Option<Interval>> = HashMap::new();
        let mut abandoned = Vec::new();
        for entry in self.store.batches.iter() {
            let (key, value) = entry.context("scanning batches for abandoned ones")?;
            let record: BatchRecord = decode(&value, "batch")?;
            if record.marker.is_some() {
                continue;
            }
            let (job, batch) = split_batch_key(&key)?;
            if !record.abandoned {
                let interval = match intervals.get(&job) {
                    Some(interval) => *interval,
                    None => {
                        let interval = self.store.job(&job)?.map(|r| r.spec.interval());
                        intervals.insert(job.clone(), interval);
                        interval
                    }
                };
                let after = abandon_after(interval, self.retention.abandon_after);
                if !is_abandoned(batch.timestamp_ms(), now_ms, after) {
                    continue;
                }
            }
            abandoned.push((job, batch, record));
        }
        let mut count = 0;
        for (job, batch, mut record) in abandoned {
            let key = batch_key(&job, batch);
            let mut deleted = false;
            for article_key in self
                .store
                .articles
                .range(key.clone()..prefix_end(&key))
                .keys()
            {
                self.store
                    .articles
                    .remove(article_key.context("listing an abandoned batch's articles")?)
                    .context("deleting an abandoned batch's article")?;
                deleted = true;
            }
            if !record.abandoned {
                record.abandoned = true;
                let event = super::events::StoredBatchEvent {
                    job_id: job.clone(),
                    batch_id: batch,
                    record: record.clone(),
                };
                let id = self
                    .store
                    .record_final_batch(&key, &encode(&record)?, &event)?;
                self.new_events.push((id, event));
                tracing::warn!(%job, %batch, "no marker came for a batch; abandoned it and deleted its articles");
            } else if !deleted {
                continue;
            }
            self.prune_due.insert(job);
            count += 1;
        }
        Ok(count)
    }
}

/// `job\0batch(16)` split into its parts.
fn split_batch_key(key: &[u8]) -> anyhow::Result<(JobId, BatchId)> {
    let nul = key
        .iter()
        .position(|&b| b == 0)
        .context("a batch key has no job separator")?;
    let job = std::str::from_utf8(&key[..nul])
        .ok()
        .and_then(|job| JobId::parse(job).ok())
        .context("a batch key's job id is malformed")?;
    let bytes: [u8; 16] = key
        .get(nul + 1..nul + 17)
        .and_then(|b| b.try_into().ok())
        .context("a batch key's batch id is malformed")?;
    Ok((job, BatchId::from_bytes(bytes)))
}
