//! The one writer of stream data: turns stream messages into stored batches, promotes complete
//! batches, keeps poison messages, and deletes jobs between message groups.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use newsflow_core::{
    ArticleMessage, BatchId, BatchMarker, BatchStatus, JobId, JobSpec, JobState, MarkerStatus,
    Promotion,
};
use newsflow_nats::subjects::{self, DataKind};

use super::{
    article_key, batch_key, decode, encode, job_prefix, prefix_end, BatchRecord, DeadLetter,
    JobRecord, JobStatus, LastError, LatestBatch, MarkerRecord, Store,
};

/// The largest seq accepted from the stream (10 pages of 100 is 1,000; external publishers get
/// room, but not enough to make a marker's count scan unbounded).
pub const MAX_SEQ: u32 = 100_000;
/// How many poison messages are kept; older ones are dropped first.
const MAX_DEAD_LETTERS: usize = 10_000;
const MAX_DEAD_LETTER_PAYLOAD: usize = 4096;

/// A stream message, understood.
#[derive(Debug)]
pub enum Parsed {
    /// An article of a batch.
    Article {
        /// The job.
        job: JobId,
        /// The batch.
        batch: BatchId,
        /// Its place in the batch.
        seq: u32,
        /// The article as the HTTP API serves it, serialized once here.
        json: Vec<u8>,
    },
    /// A batch's end marker.
    Marker {
        /// The marker.
        marker: BatchMarker,
        /// The job's spec, when the publisher attached it.
        spec: Option<JobSpec>,
    },
    /// Not something this stream should hold.
    Poison(String),
}

/// Parses one stream message: subject first, then the payload, which must agree with it.
pub fn parse(subject: &str, spec_header: Option<&str>, payload: &[u8]) -> Parsed {
    let Some(data) = subjects::parse_data(subject) else {
        return Parsed::Poison(
            "subject is not news.articles.<job_id>.<batch_id> or news.batches.<job_id>.<batch_id>"
                .to_owned(),
        );
    };
    match data.kind {
        DataKind::Article => {
            let message: ArticleMessage = match serde_json::from_slice(payload) {
                Ok(message) => message,
                Err(e) => return Parsed::Poison(format!("article payload is not valid: {e}")),
            };
            let mut article = message.article;
            if article.job_id != data.job || article.batch_id != data.batch {
                return Parsed::Poison(
                    "article's job_id/batch_id disagree with its subject".to_owned(),
                );
            }
            if message.seq >= MAX_SEQ {
                return Parsed::Poison(format!(
                    "article seq {} is above the limit {MAX_SEQ}",
                    message.seq
                ));
            }
            article.id = newsflow_core::ArticleId::from_url(&article.url);
            match serde_json::to_vec(&article) {
                Ok(json) => Parsed::Article {
                    job: data.job,
                    batch: data.batch,
                    seq: message.seq,
                    json,
                },
                Err(e) => Parsed::Poison(format!("article cannot be re-encoded: {e}")),
            }
        }
        DataKind::Marker => {
            let marker: BatchMarker = match serde_json::from_slice(payload) {
                Ok(marker) => marker,
                Err(e) => return Parsed::Poison(format!("marker payload is not valid: {e}")),
            };
            if marker.job_id != data.job || marker.batch_id != data.batch {
                return Parsed::Poison(
                    "marker's job_id/batch_id disagree with its subject".to_owned(),
                );
            }
            if marker.article_count > MAX_SEQ {
                return Parsed::Poison(format!(
                    "marker article_count {} is above the limit {MAX_SEQ}",
                    marker.article_count
                ));
            }
            let spec = spec_header
                .and_then(|text| serde_json::from_str::<JobSpec>(text).ok())
                .filter(|spec| spec.id() == &marker.job_id);
            Parsed::Marker { marker, spec }
        }
    }
}

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
    store: Store,
    tombstones: HashMap<JobId, u64>,
    /// Batches known to be stored, with the article count of their `complete` marker once
    /// there is one: no article at or past that seq is ever stored.
    known_batches: HashMap<Vec<u8>, Option<u32>>,
    /// Batches whose `complete` marker arrived before all their articles: after a restart,
    /// JetStream redelivers the unacknowledged articles only once their ack wait is over, after
    /// newer messages (the marker among them). Each late article re-checks its batch.
    awaiting_articles: HashSet<Vec<u8>>,
    dead_letter_count: usize,
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
        Ok(Self {
            store,
            tombstones,
            known_batches: HashMap::new(),
            awaiting_articles,
            dead_letter_count,
        })
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
                self.apply_marker(&marker, spec, stream_seq)
            }
            Parsed::Poison(reason) => anyhow::bail!("a poison message reached apply: {reason}"),
        }
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
            }),
        };
        let key = batch_key(job, marker.batch_id);
        self.remember_batch(key.clone(), complete_count(&record));
        if record.marker.as_ref().is_some_and(awaits_articles) {
            self.await_articles(&key)?;
        } else {
            self.stop_awaiting(&key)?;
        }
        self.store
            .batches
            .insert(key, encode(&record)?)
            .context("storing a batch marker")?;
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

    /// Keeps a poison message for inspection.
    pub fn dead_letter(
        &mut self,
        stream_seq: u64,
        subject: &str,
        reason: &str,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        self.keep_dead_letter(
            stream_seq.to_be_bytes().to_vec(),
            stream_seq,
            subject,
            reason,
            payload,
        )
    }

    /// Keeps a dead letter under `key` (the stream seq, and for an article refused when its
    /// marker came, the article's seq after it), dropping the oldest beyond the cap.
    fn keep_dead_letter(
        &mut self,
        key: Vec<u8>,
        stream_seq: u64,
        subject: &str,
        reason: &str,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let cut = &payload[..payload.len().min(MAX_DEAD_LETTER_PAYLOAD)];
        let letter = DeadLetter {
            stream_seq,
            subject: subject.chars().take(512).collect(),
            reason: reason.chars().take(1024).collect(),
            payload: String::from_utf8_lossy(cut).into_owned(),
            at: newsflow_core::now_utc(),
        };
        if self
            .store
            .dead_letters
            .insert(key, encode(&letter)?)
            .context("keeping a poison message")?
            .is_none()
        {
            self.dead_letter_count += 1;
        }
        while self.dead_letter_count > MAX_DEAD_LETTERS {
            if self
                .store
                .dead_letters
                .pop_min()
                .context("trimming poison messages")?
                .is_none()
            {
                break;
            }
            self.dead_letter_count -= 1;
        }
        Ok(())
    }

    /// Deletes a job and everything stored for it, and drops its stream data from batches
    /// that started before now. Flushed before returning.
    pub async fn delete_job(&mut self, job: &JobId) -> anyhow::Result<bool> {
        let deleted_at =
            u64::try_from(newsflow_core::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        self.store
            .tombstones
            .insert(job.as_str(), &deleted_at.to_be_bytes())
            .context("writing a tombstone")?;
        self.tombstones.insert(job.clone(), deleted_at);
        let prefix = job_prefix(job);
        for (tree, what) in [
            (&self.store.batches, "batches"),
            (&self.store.articles, "articles"),
        ] {
            for key in tree.range(prefix.clone()..prefix_end(&prefix)).keys() {
                tree.remove(key.with_context(|| format!("listing a job's {what}"))?)
                    .with_context(|| format!("deleting a job's {what}"))?;
            }
        }
        for entry in self
            .store
            .feed_ref
            .range(prefix.clone()..prefix_end(&prefix))
        {
            let (ref_key, feed_key) = entry.context("listing a job's feed entries")?;
            self.store
                .feed
                .remove(feed_key)
                .context("deleting a feed entry")?;
            self.store
                .feed_ref
                .remove(ref_key)
                .context("deleting a feed reference")?;
        }
        self.known_batches
            .retain(|key, _| !key.starts_with(&prefix));
        self.awaiting_articles
            .retain(|key| !key.starts_with(&prefix));
        for key in self
            .store
            .awaiting
            .range(prefix.clone()..prefix_end(&prefix))
            .keys()
        {
            self.store
                .awaiting
                .remove(key.context("listing a job's batches awaiting articles")?)
                .context("deleting a batch awaiting articles")?;
        }
        self.store
            .job_status
            .remove(job.as_str())
            .context("deleting a job status")?;
        let existed = self
            .store
            .jobs
            .remove(job.as_str())
            .context("deleting a job")?
            .is_some();
        self.store.flush().await?;
        Ok(existed)
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
    fn stop_awaiting(&mut self, key: &[u8]) -> anyhow::Result<()> {
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

/// Order-preserving map of a signed time to an unsigned key, reversed so newer sorts first.
pub(super) fn rev_time(unix_secs: i64) -> u64 {
    u64::MAX - (unix_secs as u64 ^ (1 << 63))
}

/// The inverse of [`rev_time`].
pub(super) fn from_rev_time(rev: u64) -> i64 {
    ((u64::MAX - rev) ^ (1 << 63)) as i64
}

/// The fields of a stored article the feed is keyed by, read without decoding the rest.
#[derive(serde::Deserialize)]
struct FeedFields<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    published_at: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    fetched_at: std::borrow::Cow<'a, str>,
}

impl FeedFields<'_> {
    /// The time the feed orders by, newest first: publication time, or fetch time when the
    /// publisher gave none (Unix seconds).
    fn sort_time(&self) -> i64 {
        let parse = |text: &str| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
        };
        self.published_at
            .as_deref()
            .and_then(parse)
            .or_else(|| parse(&self.fetched_at))
            .map_or(0, |t| t.unix_timestamp())
    }
}

fn hex_id(text: &str) -> anyhow::Result<[u8; 16]> {
    let text = text.as_bytes();
    let mut out = [0u8; 16];
    anyhow::ensure!(text.len() == 32, "an article id is not 32 hex digits");
    for (i, pair) in text.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).context("article id")?;
        out[i] = u8::from_str_radix(s, 16).context("article id")?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reversed_times_sort_newest_first_and_round_trip() {
        for (older, newer) in [(-5i64, 3i64), (0, 1), (1_700_000_000, 1_800_000_000)] {
            assert!(rev_time(newer) < rev_time(older));
            assert_eq!(from_rev_time(rev_time(older)), older);
        }
    }

    #[test]
    fn garbage_and_mismatched_messages_are_poison() {
        let batch = BatchId::generate();
        assert!(matches!(
            parse("news.other.x", None, b"{}"),
            Parsed::Poison(_)
        ));
        assert!(matches!(
            parse(&format!("news.articles.j.{batch}"), None, b"not json"),
            Parsed::Poison(_)
        ));
        assert!(matches!(
            parse(&format!("news.batches.j.{batch}"), None, b"{\"job_id\":1}"),
            Parsed::Poison(_)
        ));
        let other = BatchId::generate();
        let marker = format!(
            r#"{{"job_id":"j","batch_id":"{other}","status":"complete","article_count":0,"started_at":"2026-11-20T08:00:00Z","finished_at":"2026-11-20T08:00:01Z","error":null}}"#
        );
        assert!(matches!(
            parse(&format!("news.batches.j.{batch}"), None, marker.as_bytes()),
            Parsed::Poison(_)
        ));
    }

    /// A stream message: mostly the stream's subject shapes and payloads whose job and batch
    /// agree with the subject, with fields replaced by arbitrary values; sometimes anything.
    fn message() -> impl Strategy<Value = (String, Vec<u8>)> {
        let kind = prop_oneof![
            6 => proptest::sample::select(vec!["articles", "batches"]),
            1 => proptest::sample::select(vec!["ctl", "", "articles.x", "Articles"]),
        ];
        let job = prop_oneof![
            6 => "[a-z0-9][a-z0-9_-]{0,8}",
            1 => ".{0,10}",
        ];
        let batch = prop_oneof![
            6 => any::<u128>().prop_map(|n| ulid::Ulid(n).to_string()),
            1 => "[0-9A-Za-z]{0,30}",
        ];
        let value = prop_oneof![
            Just(serde_json::Value::Null),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u32>().prop_map(serde_json::Value::from),
            (MAX_SEQ - 2..MAX_SEQ + 2).prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            ".{0,20}".prop_map(serde_json::Value::from),
            Just(serde_json::json!({"id":null,"name":"x"})),
            Just(serde_json::json!({"code":"c","message":"m"})),
            Just(serde_json::json!("2026-11-20T08:00:00Z")),
            Just(serde_json::json!("https://example.com/a")),
            proptest::sample::select(vec!["complete", "failed", "in_progress"])
                .prop_map(serde_json::Value::from),
        ];
        let field = proptest::sample::select(vec![
            "id",
            "job_id",
            "batch_id",
            "source",
            "author",
            "title",
            "description",
            "url",
            "url_to_image",
            "published_at",
            "content",
            "fetched_at",
            "seq",
            "status",
            "article_count",
            "started_at",
            "finished_at",
            "error",
            "extra",
        ]);
        let structured = (
            kind,
            job,
            batch,
            any::<bool>(),
            proptest::collection::vec((field, value), 0..3),
        )
            .prop_map(|(kind, job, batch, is_article, changes)| {
                let mut base = if is_article {
                    serde_json::json!({
                        "id":"00000000000000000000000000000000","job_id":job,"batch_id":batch,
                        "source":{"id":null,"name":"n"},"author":null,"title":"t",
                        "description":null,"url":"https://example.com/a","url_to_image":null,
                        "published_at":null,"content":null,"fetched_at":"2026-11-20T08:00:00Z",
                        "seq":0
                    })
                } else {
                    serde_json::json!({
                        "job_id":job,"batch_id":batch,"status":"complete","article_count":1,
                        "started_at":"2026-11-20T08:00:00Z",
                        "finished_at":"2026-11-20T08:00:01Z","error":null
                    })
                };
                for (name, value) in changes {
                    base[name] = value;
                }
                let payload = serde_json::to_vec(&base).unwrap_or_default();
                (format!("news.{kind}.{job}.{batch}"), payload)
            });
        prop_oneof![
            3 => structured,
            1 => (".{0,60}", proptest::collection::vec(any::<u8>(), 0..256)),
        ]
    }

    proptest! {
        /// The stream-message parser on arbitrary subjects, payloads and spec headers: never
        /// panics, and an article it accepts belongs to the subject's job and batch.
        #[test]
        fn arbitrary_stream_messages_never_panic_the_parser(
            (subject, payload) in message(),
            header in proptest::option::of(prop_oneof![
                ".{0,40}",
                Just(r#"{"id":"j","endpoint":"everything","params":{"q":"x"},"interval_secs":1,"max_pages":1,"page_size":1}"#.to_owned()),
            ]),
        ) {
            match parse(&subject, header.as_deref(), &payload) {
                Parsed::Article { job, batch, seq, json } => {
                    let data = subjects::parse_data(&subject).expect("an accepted subject parses");
                    prop_assert_eq!(&job, &data.job);
                    prop_assert_eq!(batch, data.batch);
                    prop_assert!(seq < MAX_SEQ);
                    let article: newsflow_core::Article = serde_json::from_slice(&json).expect("stored JSON re-parses");
                    prop_assert_eq!(article.id, newsflow_core::ArticleId::from_url(&article.url));
                }
                Parsed::Marker { marker, spec } => {
                    prop_assert!(marker.article_count <= MAX_SEQ);
                    if let Some(spec) = spec {
                        prop_assert_eq!(spec.id(), &marker.job_id);
                    }
                }
                Parsed::Poison(reason) => prop_assert!(!reason.is_empty()),
            }
        }
    }
}
