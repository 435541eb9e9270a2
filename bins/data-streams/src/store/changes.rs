//! Which job records changed since they were last published, for read replicas: the store
//! notes every job write here (while [`JobChanges::record`] is on, i.e. while this instance
//! controls jobs), the publisher (`crate::replicate`) copies the noted records to the jobs
//! bucket, and a request that changed jobs waits with [`JobChanges::published`] until its
//! changes are in the bucket before it is answered.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use newsflow_core::JobId;
use tokio::sync::{watch, Notify};

/// Job ids changed and not yet published, with a count of every change ever noted.
#[derive(Debug)]
pub struct JobChanges {
    recording: AtomicBool,
    pending: Mutex<Pending>,
    noted: Notify,
    published: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Pending {
    jobs: BTreeSet<JobId>,
    /// Changes noted so far (the sequence number of the last one).
    changes: u64,
}

/// The changes a publisher took: publish these jobs' current records, then report `upto`.
#[derive(Debug)]
pub struct Taken {
    /// The jobs, in id order.
    pub jobs: BTreeSet<JobId>,
    /// Every change up to this number is covered once these jobs are published.
    pub upto: u64,
}

impl Default for JobChanges {
    fn default() -> Self {
        Self {
            recording: AtomicBool::new(false),
            pending: Mutex::default(),
            noted: Notify::new(),
            published: watch::Sender::new(0),
        }
    }
}

impl JobChanges {
    /// Notes that `job`'s record was written or deleted (nothing while not recording).
    pub fn changed(&self, job: &JobId) {
        if !self.recording.load(Ordering::Acquire) {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.jobs.insert(job.clone());
        pending.changes += 1;
        drop(pending);
        self.noted.notify_one();
    }

    /// Starts or stops noting changes. Starting forgets nothing already noted; stopping drops
    /// what was not published (a replica takes its records from the bucket instead).
    pub fn record(&self, on: bool) {
        self.recording.store(on, Ordering::Release);
        if !on {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.jobs.clear();
            let changes = pending.changes;
            drop(pending);
            // Nobody waits for changes that will never be published by this instance.
            self.published.send_replace(changes);
        }
        self.noted.notify_one();
    }

    /// Whether changes are being noted (this instance controls jobs).
    pub fn is_recording(&self) -> bool {
        self.recording.load(Ordering::Acquire)
    }

    /// Waits until some change is noted, then takes every noted change.
    pub async fn take(&self) -> Taken {
        loop {
            let notified = self.noted.notified();
            {
                let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                if !pending.jobs.is_empty() {
                    return Taken {
                        jobs: std::mem::take(&mut pending.jobs),
                        upto: pending.changes,
                    };
                }
            }
            notified.await;
        }
    }

    /// Puts back jobs whose publishing failed, to be taken again.
    pub fn put_back(&self, jobs: impl IntoIterator<Item = JobId>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.jobs.extend(jobs);
        drop(pending);
        self.noted.notify_one();
    }

    /// Reports that every change up to `upto` is published.
    pub fn mark_published(&self, upto: u64) {
        self.published.send_if_modified(|published| {
            let newer = upto > *published;
            if newer {
                *published = upto;
            }
            newer
        });
    }

    /// Waits (at most `within`) until every change noted before the call is published;
    /// `false` when that did not happen in time.
    pub async fn published(&self, within: Duration) -> bool {
        let target = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .changes;
        let mut published = self.published.subscribe();
        tokio::time::timeout(within, published.wait_for(|done| *done >= target))
            .await
            .is_ok_and(|waited| waited.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> JobId {
        JobId::parse(id).expect("valid")
    }

    #[tokio::test]
    async fn a_waiter_is_released_only_once_its_changes_are_published() {
        let changes = JobChanges::default();
        changes.changed(&job("ignored"));
        assert!(
            changes.published(Duration::from_millis(10)).await,
            "nothing is noted while not recording"
        );
        changes.record(true);
        changes.changed(&job("a"));
        changes.changed(&job("b"));
        changes.changed(&job("a"));
        let taken = changes.take().await;
        assert_eq!(taken.jobs.len(), 2);
        assert_eq!(taken.upto, 3);
        assert!(!changes.published(Duration::from_millis(10)).await);
        changes.mark_published(taken.upto);
        assert!(changes.published(Duration::from_millis(10)).await);
    }

    #[tokio::test]
    async fn stopping_recording_releases_waiters_and_drops_what_was_noted() {
        let changes = JobChanges::default();
        changes.record(true);
        changes.changed(&job("a"));
        changes.record(false);
        assert!(changes.published(Duration::from_millis(10)).await);
        changes.record(true);
        changes.changed(&job("b"));
        let taken = changes.take().await;
        assert_eq!(taken.jobs.into_iter().collect::<Vec<_>>(), vec![job("b")]);
    }
}
