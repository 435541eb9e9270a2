//! What the worker says about each job it runs: when it runs next, how many runs in a row
//! failed, and the latest run skipped for lack of budget (which no marker reports). Kept in the
//! plans bucket under the job's id, where data-streams reads it for `GET /jobs/{id}`.
//!
//! Job tasks post reports on a board (the latest per job wins) and go on at once; one writer
//! task drains the board into the bucket, so a slow NATS never holds up a run, and a thousand
//! jobs reporting together make at most one write each.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use newsflow_core::digest::fingerprint;
use newsflow_core::JobId;
use newsflow_nats::async_nats::jetstream::kv;
use newsflow_nats::wire::{JobPlan, SkippedRun, WorkerId};
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A job's latest report, waiting to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The job's plan.
    Plan(JobPlan),
    /// The job stopped here: its plan is withdrawn, unless another worker wrote one since.
    Gone,
}

/// The board job tasks post their plans on.
#[derive(Debug)]
pub struct PlanBoard {
    worker: WorkerId,
    pending: Mutex<BTreeMap<JobId, Report>>,
    posted: Notify,
}

impl PlanBoard {
    /// An empty board for `worker`'s jobs.
    pub fn new(worker: WorkerId) -> Self {
        Self {
            worker,
            pending: Mutex::new(BTreeMap::new()),
            posted: Notify::new(),
        }
    }

    fn pending(&self) -> MutexGuard<'_, BTreeMap<JobId, Report>> {
        // Every operation leaves the map whole, so a panic elsewhere cannot corrupt it.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Posts `job`'s plan: its next run, failures in a row and latest skipped run.
    pub fn post(
        &self,
        job: &JobId,
        next_run_at: Option<OffsetDateTime>,
        consecutive_failures: u32,
        skipped: Option<SkippedRun>,
    ) {
        let plan = JobPlan {
            worker_id: self.worker.clone(),
            next_run_at,
            consecutive_failures,
            skipped,
            at: newsflow_core::now_utc(),
        };
        self.pending().insert(job.clone(), Report::Plan(plan));
        self.posted.notify_one();
    }

    /// Posts that `job` no longer runs here.
    pub fn gone(&self, job: &JobId) {
        self.pending().insert(job.clone(), Report::Gone);
        self.posted.notify_one();
    }

    /// Takes every report posted since the last call.
    pub fn take(&self) -> BTreeMap<JobId, Report> {
        std::mem::take(&mut *self.pending())
    }

    /// Writes reports into `store` as they are posted, until `stop` fires; then writes what
    /// is left once more and returns. A write that fails is logged: the next report of the job
    /// replaces it.
    pub async fn write_out(&self, store: kv::Store, stop: CancellationToken) {
        // The revision of this worker's last write per job, so withdrawing a plan never
        // deletes one another worker wrote after it. Keyed by the id's 64-bit fingerprint, not
        // a copy of the id: 16 bytes a job at 100,000 jobs (two ids sharing one would at worst
        // leave a plan a stop should have withdrawn: the revision check keeps others' writes).
        let mut written: HashMap<u64, u64> = HashMap::new();
        loop {
            let stopping = tokio::select! {
                biased;
                () = stop.cancelled() => true,
                () = self.posted.notified() => false,
            };
            for (job, report) in self.take() {
                write(&store, &mut written, job, report).await;
            }
            if stopping {
                break;
            }
        }
    }
}

async fn write(store: &kv::Store, written: &mut HashMap<u64, u64>, job: JobId, report: Report) {
    let key = fingerprint(&job);
    match report {
        Report::Plan(plan) => {
            let value = match serde_json::to_vec(&plan) {
                Ok(value) => Bytes::from(value),
                Err(error) => {
                    tracing::error!(job = %job, %error, "could not encode a job plan");
                    return;
                }
            };
            match store.put(job.as_str(), value).await {
                Ok(revision) => {
                    tracing::debug!(job = %job, revision, "job plan written");
                    written.insert(key, revision);
                }
                Err(error) => tracing::warn!(job = %job, %error, "could not write a job plan"),
            }
        }
        Report::Gone => {
            if let Some(revision) = written.remove(&key) {
                // Fails harmlessly when another worker wrote the job's plan since.
                if let Err(error) = store
                    .delete_expect_revision(job.as_str(), Some(revision))
                    .await
                {
                    tracing::debug!(job = %job, %error, "job plan not withdrawn");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> JobId {
        JobId::parse(id).expect("valid")
    }

    #[test]
    fn the_latest_report_of_a_job_wins_and_taking_empties_the_board() {
        let board = PlanBoard::new(WorkerId::parse("w1").expect("valid"));
        board.post(&job("a"), None, 1, None);
        board.post(&job("a"), None, 2, None);
        board.post(&job("b"), None, 0, None);
        board.gone(&job("b"));

        let reports = board.take();

        assert_eq!(reports.len(), 2);
        let Report::Plan(plan) = &reports[&job("a")] else {
            panic!("a plan: {reports:?}");
        };
        assert_eq!(plan.consecutive_failures, 2);
        assert_eq!(plan.worker_id.as_str(), "w1");
        assert_eq!(reports[&job("b")], Report::Gone);
        assert!(board.take().is_empty());
    }
}
