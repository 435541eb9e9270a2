//! Job records: created, changed and read by the API and the reconciler. Every write goes
//! through one lock (held only around synchronous sled calls, never across `.await`) and
//! changes the in-memory [`JobIndex`] right after the tree, under the same lock.

use std::sync::{MutexGuard, PoisonError, RwLockReadGuard, RwLockWriteGuard};

use anyhow::Context as _;
use newsflow_core::JobId;

use super::{decode, encode, JobIndex, JobRecord, JobStatus, Store};

/// The index of every record in `jobs`, built when the store opens.
pub(super) fn load_index(jobs: &sled::Tree) -> anyhow::Result<JobIndex> {
    let mut index = JobIndex::default();
    for value in jobs.iter().values() {
        index.put(&decode(&value.context("loading the job index")?, "job")?);
    }
    Ok(index)
}

impl Store {
    /// The job lock: every job write holds it from reading to indexing.
    fn lock_jobs(&self) -> MutexGuard<'_, ()> {
        self.job_lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn index_mut(&self) -> RwLockWriteGuard<'_, JobIndex> {
        // Each index change is applied whole before the guard drops, so a poisoned lock
        // still guards a consistent index.
        self.job_index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The in-memory index of every job. Hold it briefly, and never while writing a job.
    pub fn job_index(&self) -> RwLockReadGuard<'_, JobIndex> {
        self.job_index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores a new job; `false` when the id is taken.
    pub fn create_job(&self, record: &JobRecord) -> anyhow::Result<bool> {
        let _call = self.watched("create job");
        let value = encode(record)?;
        let _guard = self.lock_jobs();
        let swapped = self
            .jobs
            .compare_and_swap(
                record.spec.id().as_str(),
                None as Option<&[u8]>,
                Some(value),
            )
            .context("creating a job record")?;
        if swapped.is_ok() {
            self.index_mut().put(record);
            self.changes.changed(record.spec.id());
        }
        Ok(swapped.is_ok())
    }

    /// Deletes a job's record; `false` when there was none.
    pub fn remove_job(&self, id: &JobId) -> anyhow::Result<bool> {
        let _call = self.watched("remove job");
        let _guard = self.lock_jobs();
        let existed = self
            .jobs
            .remove(id.as_str())
            .context("deleting a job")?
            .is_some();
        self.index_mut().remove(id);
        Ok(existed)
    }

    /// Whether a job exists (cheaper than reading it).
    ///
    /// Read from the in-memory index (kept in step with every job write): every read of
    /// stored data asks, and a sled lookup was 5% of a page read's instructions.
    pub fn job_exists(&self, id: &JobId) -> anyhow::Result<bool> {
        Ok(self.job_index().get(id).is_some())
    }

    /// A job's record.
    pub fn job(&self, id: &JobId) -> anyhow::Result<Option<JobRecord>> {
        let _call = self.watched("job");
        self.jobs
            .get(id.as_str())
            .context("reading a job record")?
            .map(|v| decode(&v, "job"))
            .transpose()
    }

    /// Changes a job's record with `change`, atomically with respect to other changes; `None`
    /// when the job does not exist.
    pub fn update_job(
        &self,
        id: &JobId,
        change: impl FnOnce(&mut JobRecord),
    ) -> anyhow::Result<Option<JobRecord>> {
        let _call = self.watched("update job");
        let _guard = self.lock_jobs();
        let Some(mut record) = self.job(id)? else {
            return Ok(None);
        };
        change(&mut record);
        self.jobs
            .insert(id.as_str(), encode(&record)?)
            .context("updating a job record")?;
        self.index_mut().put(&record);
        self.changes.changed(id);
        Ok(Some(record))
    }

    /// Up to `limit` jobs in id order, after the id `after`; and whether more follow.
    pub fn jobs_page(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> anyhow::Result<(Vec<JobRecord>, bool)> {
        let _call = self.watched("jobs page");
        let range = match after {
            Some(after) => self
                .jobs
                .range::<&[u8], _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => self.jobs.iter(),
        };
        let mut jobs = Vec::with_capacity(limit.min(1024));
        for entry in range {
            let (_, value) = entry.context("listing jobs")?;
            if jobs.len() == limit {
                return Ok((jobs, true));
            }
            jobs.push(decode(&value, "job")?);
        }
        Ok((jobs, false))
    }

    /// Every job, decoded: O(jobs), for tests and tools; the control side reads the index.
    pub fn all_jobs(&self) -> anyhow::Result<Vec<JobRecord>> {
        let _call = self.watched("all jobs");
        self.jobs
            .iter()
            .values()
            .map(|v| decode(&v.context("listing jobs")?, "job"))
            .collect()
    }

    /// How many jobs exist.
    pub fn job_count(&self) -> usize {
        self.job_index().len()
    }

    /// The id of a job's latest complete batch: [`Store::job_status`] for the read path, which
    /// asks on every request and needs nothing else (the rest of the record is skipped, not
    /// decoded).
    pub fn latest_batch(&self, id: &JobId) -> anyhow::Result<Option<newsflow_core::BatchId>> {
        #[derive(serde::Deserialize)]
        struct LatestOnly {
            latest: Option<IdOnly>,
        }
        #[derive(serde::Deserialize)]
        struct IdOnly {
            id: newsflow_core::BatchId,
        }
        Ok(self
            .read_status::<LatestOnly>(id)?
            .and_then(|status| status.latest)
            .map(|latest| latest.id))
    }

    /// What ingest learned about a job (empty when nothing yet).
    pub fn job_status(&self, id: &JobId) -> anyhow::Result<JobStatus> {
        Ok(self.read_status(id)?.unwrap_or_default())
    }

    /// A job's stored status decoded as `T` (the whole record, or the part a caller needs).
    fn read_status<T: serde::de::DeserializeOwned>(&self, id: &JobId) -> anyhow::Result<Option<T>> {
        let _call = self.watched("job status");
        self.job_status
            .get(id.as_str())
            .context("reading a job status")?
            .map(|v| decode(&v, "job status"))
            .transpose()
    }
}
