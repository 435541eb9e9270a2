//! What leaves the store or is set aside: poison messages kept as dead letters (capped), and
//! a deleted job with everything stored for it.

use anyhow::Context as _;
use newsflow_core::JobId;

use super::ingest::Ingest;
use super::{encode, job_prefix, prefix_end, DeadLetter};

/// How many poison messages are kept; older ones are dropped first.
const MAX_DEAD_LETTERS: usize = 10_000;
const MAX_DEAD_LETTER_PAYLOAD: usize = 4096;

impl Ingest {
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
    pub(super) fn keep_dead_letter(
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
    /// that started before now; returns whether the job existed. Not flushed: the store
    /// writer hands the wait for [`super::Store::flush`] to the caller, so that it goes on
    /// applying groups while the deletion is made durable (a writer waiting for each delete's
    /// flush in turn starved ingest under many writers).
    pub fn delete_job_unflushed(&mut self, job: &JobId) -> anyhow::Result<bool> {
        let deleted_at = newsflow_core::unix_ms(newsflow_core::now_utc());
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
        self.store.forget_batch_events(job)?;
        self.new_events.retain(|(_, event)| &event.job_id != job);
        self.store
            .job_status
            .remove(job.as_str())
            .context("deleting a job status")?;
        let existed = self.store.remove_job(job)?;
        if existed {
            self.store.changes.changed(job);
        }
        Ok(existed)
    }
}
