//! The durable, time-ordered index of batch events: one entry per batch reaching a final
//! status, written by the ingest writer in the same sled transaction as the batch's record,
//! so a client reconnecting with `Last-Event-ID` replays exactly what it missed, also across
//! a restart.
//!
//! Tree `batch_events`: [`EventId`] (16 bytes) → [`StoredBatchEvent`] as JSON.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use newsflow_core::{BatchId, JobId};
use serde::{Deserialize, Serialize};

use super::{decode, BatchRecord, Store};

/// How long batch events stay replayable.
pub const EVENT_RETENTION_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// The most batch events kept; the oldest go first beyond it.
pub const MAX_STORED_EVENTS: usize = 100_000;

/// An event's id: the wall-clock millisecond it was made, then a counter within that
/// millisecond. Its bytes and its text (32 hex digits) both sort in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    ms: u64,
    n: u64,
}

impl EventId {
    /// The key bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&self.ms.to_be_bytes());
        bytes[8..].copy_from_slice(&self.n.to_be_bytes());
        bytes
    }

    /// From key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes = <[u8; 16]>::try_from(bytes).ok()?;
        let (ms, n) = bytes.split_at(8);
        Some(Self {
            ms: u64::from_be_bytes(ms.try_into().ok()?),
            n: u64::from_be_bytes(n.try_into().ok()?),
        })
    }

    /// From the text a client sends back in `Last-Event-ID`.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Self {
            ms: u64::from_str_radix(text.get(..16)?, 16).ok()?,
            n: u64::from_str_radix(text.get(16..)?, 16).ok()?,
        })
    }

    /// The first possible id of millisecond `ms`: resuming "after" it replays everything made
    /// in that millisecond or later.
    pub fn before(ms: u64) -> Self {
        Self { ms, n: 0 }
    }

    /// The millisecond it was made.
    pub fn ms(self) -> u64 {
        self.ms
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}{:016x}", self.ms, self.n)
    }
}

/// Hands out increasing event ids, also across restarts: it starts past the newest stored one
/// (a clock that went back does not make ids go back).
#[derive(Clone, Default)]
pub struct EventClock {
    last: Arc<Mutex<EventId>>,
}

impl EventClock {
    fn starting_after(last: EventId) -> Self {
        Self {
            last: Arc::new(Mutex::new(last)),
        }
    }

    /// The next id at `now_ms`.
    pub fn next(&self, now_ms: u64) -> EventId {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *last = if now_ms > last.ms {
            EventId { ms: now_ms, n: 0 }
        } else {
            EventId {
                ms: last.ms,
                n: last.n + 1,
            }
        };
        *last
    }
}

/// A stored batch event: which batch, and its record as it reached its final status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredBatchEvent {
    /// The job.
    pub job_id: JobId,
    /// The batch.
    pub batch_id: BatchId,
    /// The batch's record at that moment.
    pub record: BatchRecord,
}

impl Store {
    /// The clock that starts past the newest stored event.
    pub(super) fn event_clock_from(tree: &sled::Tree) -> anyhow::Result<EventClock> {
        let last = tree
            .last()
            .context("reading the newest batch event")?
            .and_then(|(key, _)| EventId::from_bytes(&key))
            .unwrap_or(EventId { ms: 0, n: 0 });
        Ok(EventClock::starting_after(last))
    }

    /// A new event id, now.
    pub fn next_event_id(&self) -> EventId {
        self.event_clock
            .next(newsflow_core::unix_ms(newsflow_core::now_utc()))
    }

    /// Stores a batch's new record together with its event, atomically.
    pub(super) fn record_final_batch(
        &self,
        key: &[u8],
        encoded_record: &[u8],
        event: &StoredBatchEvent,
    ) -> anyhow::Result<EventId> {
        use sled::Transactional as _;
        let id = self.next_event_id();
        let encoded_event = super::encode(event)?;
        (&self.batches, &self.batch_events)
            .transaction(|(batches, events)| {
                batches.insert(key, encoded_record)?;
                events.insert(&id.to_bytes(), encoded_event.as_slice())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|error| anyhow::anyhow!("storing a batch and its event: {error:?}"))?;
        Ok(id)
    }

    /// Up to `limit` stored batch events after `after`, oldest first, of `job` when given.
    pub fn batch_events_after(
        &self,
        after: EventId,
        job: Option<&JobId>,
        limit: usize,
    ) -> anyhow::Result<Vec<(EventId, StoredBatchEvent)>> {
        let _call = self.watched("read batch events");
        let mut found = Vec::new();
        let start = after.to_bytes();
        for entry in self.batch_events.range::<&[u8], _>((
            std::ops::Bound::Excluded(&start[..]),
            std::ops::Bound::Unbounded,
        )) {
            let (key, value) = entry.context("reading batch events")?;
            let Some(id) = EventId::from_bytes(&key) else {
                continue;
            };
            let event: StoredBatchEvent = decode(&value, "batch event")?;
            if job.is_none_or(|job| job == &event.job_id) {
                found.push((id, event));
                if found.len() >= limit {
                    break;
                }
            }
        }
        Ok(found)
    }

    /// Where `batch`'s event sits in the index: the position a client whose last event was that
    /// batch's resumes after. A batch's event comes after it started, so the search starts at
    /// the batch id's time. `None` when the index no longer holds it (pruned).
    pub fn batch_event_position(&self, batch: BatchId) -> anyhow::Result<Option<EventId>> {
        let _call = self.watched("find a batch event");
        let start = EventId::before(batch.timestamp_ms()).to_bytes();
        for entry in self.batch_events.range::<&[u8], _>(&start[..]..) {
            let (key, value) = entry.context("reading batch events")?;
            let event: StoredBatchEvent = decode(&value, "batch event")?;
            if event.batch_id == batch {
                return Ok(EventId::from_bytes(&key));
            }
        }
        Ok(None)
    }

    /// Deletes a deleted job's batch events, so a resuming client is never sent a batch of a
    /// job that no longer exists (or of an older job with a reused id). Deletes are rare; this
    /// scans the bounded tree.
    pub(super) fn forget_batch_events(&self, job: &JobId) -> anyhow::Result<()> {
        for entry in self.batch_events.iter() {
            let (key, value) = entry.context("listing batch events")?;
            let event: StoredBatchEvent = decode(&value, "batch event")?;
            if &event.job_id == job {
                self.batch_events
                    .remove(key)
                    .context("deleting a deleted job's batch event")?;
            }
        }
        Ok(())
    }

    /// Deletes batch events older than [`EVENT_RETENTION_MS`] before `now_ms`, and the oldest
    /// beyond [`MAX_STORED_EVENTS`]; returns how many went.
    pub fn prune_batch_events(&self, now_ms: u64) -> anyhow::Result<usize> {
        let cutoff = now_ms.saturating_sub(EVENT_RETENTION_MS);
        let mut excess = self.batch_events.len().saturating_sub(MAX_STORED_EVENTS);
        let mut pruned = 0;
        for key in self.batch_events.iter().keys() {
            let key = key.context("listing batch events")?;
            let old = EventId::from_bytes(&key).is_none_or(|id| id.ms < cutoff);
            if !old && excess == 0 {
                break;
            }
            excess = excess.saturating_sub(1);
            self.batch_events
                .remove(key)
                .context("pruning a batch event")?;
            pruned += 1;
        }
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{apply, article_message, marker_message};
    use super::super::Ingest;
    use super::*;

    #[tokio::test]
    async fn final_batches_are_indexed_once_in_order_and_forgotten_with_their_job_or_age() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(dir.path()).expect("the store opens");
        let mut ingest = Ingest::new(store.clone()).expect("ingest starts");
        let (a, b) = (
            JobId::parse("a").expect("valid"),
            JobId::parse("b").expect("valid"),
        );
        let mut made = Vec::new();
        for job in [&a, &b, &a] {
            let batch = BatchId::generate();
            apply(&mut ingest, article_message(job, batch, 0));
            apply(&mut ingest, marker_message(job, batch, 1));
            // A redelivered marker is the same status: no second event.
            apply(&mut ingest, marker_message(job, batch, 1));
            made.push((job.clone(), batch));
        }
        let taken = ingest.take_events();
        let stored = store
            .batch_events_after(EventId::default(), None, 100)
            .expect("reads");
        assert_eq!(
            stored
                .iter()
                .map(|(_, e)| (e.job_id.clone(), e.batch_id))
                .collect::<Vec<_>>(),
            made
        );
        assert_eq!(
            taken.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            stored.iter().map(|(id, _)| *id).collect::<Vec<_>>()
        );
        let after_first = store
            .batch_events_after(stored[0].0, Some(&a), 100)
            .expect("reads");
        assert_eq!(after_first.len(), 1, "only a's, only after the id");
        assert_eq!(after_first[0].1.batch_id, made[2].1);

        ingest.delete_job_unflushed(&a).expect("deletes");
        store.flush().await.expect("flushes");
        let left = store
            .batch_events_after(EventId::default(), None, 100)
            .expect("reads");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1.job_id, b);

        let now = newsflow_core::unix_ms(newsflow_core::now_utc());
        assert_eq!(store.prune_batch_events(now).expect("prunes"), 0);
        assert_eq!(
            store
                .prune_batch_events(now + EVENT_RETENTION_MS + 1)
                .expect("prunes"),
            1
        );
    }

    #[tokio::test]
    async fn a_batch_that_finished_after_a_later_started_one_is_found_after_it() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(dir.path()).expect("the store opens");
        let mut ingest = Ingest::new(store.clone()).expect("ingest starts");
        let (slow, quick) = (
            JobId::parse("slow").expect("valid"),
            JobId::parse("quick").expect("valid"),
        );
        let now = newsflow_core::unix_ms(newsflow_core::now_utc());
        // `early` started first but finishes second.
        let early = BatchId::from_parts(now - 5_000, 1);
        let late = BatchId::from_parts(now - 1_000, 2);
        apply(&mut ingest, article_message(&quick, late, 0));
        apply(&mut ingest, marker_message(&quick, late, 1));
        apply(&mut ingest, article_message(&slow, early, 0));
        apply(&mut ingest, marker_message(&slow, early, 1));

        let after_late = store
            .batch_event_position(late)
            .expect("reads")
            .expect("indexed");
        let replayed = store
            .batch_events_after(after_late, None, 100)
            .expect("reads");

        assert_eq!(
            replayed.iter().map(|(_, e)| e.batch_id).collect::<Vec<_>>(),
            [early],
            "resuming after the later-started batch still replays the one that finished after it"
        );
        assert_eq!(
            store
                .batch_event_position(BatchId::from_parts(now, 9))
                .expect("reads"),
            None
        );
    }

    #[test]
    fn event_ids_sort_as_text_and_bytes_alike_and_round_trip() {
        let clock = EventClock::default();
        let a = clock.next(5);
        let b = clock.next(5);
        let c = clock.next(3);
        let d = clock.next(0x1_0000);
        assert!(a < b && b < c && c < d);
        assert!(a.to_string() < b.to_string() && c.to_string() < d.to_string());
        assert!(a.to_bytes() < b.to_bytes() && c.to_bytes() < d.to_bytes());
        assert_eq!(EventId::parse(&d.to_string()), Some(d));
        assert_eq!(EventId::from_bytes(&d.to_bytes()), Some(d));
        assert_eq!(EventId::parse("not an id"), None);
    }
}
