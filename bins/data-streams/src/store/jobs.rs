//! Job records: created, changed and read by the API and the reconciler. Read-modify-write
//! goes through one lock (held only around synchronous sled calls, never across `.await`).

use anyhow::Context as _;
use newsflow_core::JobId;

use super::{decode, encode, JobRecord, JobStatus, Store};

impl Store {
    /// Stores a new job; `false` when the id is taken.
    pub fn create_job(&self, record: &JobRecord) -> anyhow::Result<bool> {
        let _call = self.watched("create job");
        let value = encode(record)?;
        let swapped = self
            .jobs
            .compare_and_swap(
                record.spec.id().as_str(),
                None as Option<&[u8]>,
                Some(value),
            )
            .context("creating a job record")?;
        if swapped.is_ok() {
            self.changes.changed(record.spec.id());
        }
        Ok(swapped.is_ok())
    }

    /// Whether a job exists (cheaper than reading it).
    pub fn job_exists(&self, id: &JobId) -> anyhow::Result<bool> {
        let _call = self.watched("job exists");
        self.jobs
            .contains_key(id.as_str())
            .context("reading a job record")
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
        let _guard = self
            .job_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(mut record) = self.job(id)? else {
            return Ok(None);
        };
        change(&mut record);
        self.jobs
            .insert(id.as_str(), encode(&record)?)
            .context("updating a job record")?;
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

    /// Every job, for the reconciler (jobs are few compared with articles).
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
        let _call = self.watched("job count");
        self.jobs.len()
    }

    /// What ingest learned about a job (empty when nothing yet).
    pub fn job_status(&self, id: &JobId) -> anyhow::Result<JobStatus> {
        let _call = self.watched("job status");
        Ok(self
            .job_status
            .get(id.as_str())
            .context("reading a job status")?
            .map(|v| decode(&v, "job status"))
            .transpose()?
            .unwrap_or_default())
    }
}
