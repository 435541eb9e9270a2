//! The jobs running on this worker: one task per job, and the schedule each task keeps.
//!
//! A job's task runs its batches one after another, so a job never runs twice at once here.
//! Its spec sits in a `watch` channel: a start command with a new spec takes effect from the
//! next run without disturbing the one in hand.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use newsflow_core::schedule::{failure_delay, lateness, next_due};
use newsflow_core::{JobId, JobSpec};
use newsflow_nats::wire::SkippedRun;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::plans::PlanBoard;
use crate::run::{PageSource, Publisher, RunEnd, Runner};

/// Starts a job's task: given its spec channel and its cancellation token, spawns the task.
pub type SpawnJob =
    Arc<dyn Fn(watch::Receiver<JobSpec>, CancellationToken) -> JoinHandle<()> + Send + Sync>;

/// What a start command changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// The job was not running here; its task now is.
    New,
    /// It was running with another spec; the next run uses the new one.
    Updated,
    /// It was running with this very spec.
    Unchanged,
}

struct Entry {
    spec: watch::Sender<JobSpec>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// The jobs of this worker. The lock guards the map only; it is never held across an `.await`.
pub struct Registry {
    jobs: Mutex<BTreeMap<JobId, Entry>>,
    spawn: SpawnJob,
}

impl Registry {
    /// An empty registry starting job tasks with `spawn`.
    pub fn new(spawn: SpawnJob) -> Self {
        Self {
            jobs: Mutex::new(BTreeMap::new()),
            spawn,
        }
    }

    fn jobs(&self) -> MutexGuard<'_, BTreeMap<JobId, Entry>> {
        // Each map operation leaves the map whole, so a panic elsewhere cannot corrupt it.
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `spec` here: starts its task, or hands a running task the new spec. The job is
    /// registered (and so in the next heartbeat) when this returns.
    pub fn start(&self, spec: JobSpec) -> Started {
        let mut jobs = self.jobs();
        if let Some(entry) = jobs.get(spec.id()) {
            if !entry.task.is_finished() {
                return if *entry.spec.borrow() == spec {
                    Started::Unchanged
                } else {
                    entry.spec.send_replace(spec);
                    Started::Updated
                };
            }
        }
        let id = spec.id().clone();
        let (sender, receiver) = watch::channel(spec);
        let cancel = CancellationToken::new();
        let task = (self.spawn)(receiver, cancel.clone());
        jobs.insert(
            id,
            Entry {
                spec: sender,
                cancel,
                task,
            },
        );
        Started::New
    }

    /// Stops `job` and waits up to `grace` for its task to end, so nothing of it is published
    /// after this returns. `false` when it was not running here.
    pub async fn stop(&self, job: &JobId, grace: Duration) -> bool {
        let entry = self.jobs().remove(job);
        match entry {
            Some(entry) => {
                entry.cancel.cancel();
                join(job, entry.task, grace).await;
                true
            }
            None => false,
        }
    }

    /// The ids of the jobs running here, sorted.
    pub fn job_ids(&self) -> Vec<JobId> {
        self.jobs().keys().cloned().collect()
    }

    /// Stops every job, waiting up to `grace` in all for their tasks to end; returns how many
    /// jobs there were.
    pub async fn stop_all(&self, grace: Duration) -> usize {
        let entries = std::mem::take(&mut *self.jobs());
        let count = entries.len();
        for entry in entries.values() {
            entry.cancel.cancel();
        }
        let deadline = Instant::now() + grace;
        for (job, entry) in entries {
            join(
                &job,
                entry.task,
                deadline.saturating_duration_since(Instant::now()),
            )
            .await;
        }
        count
    }
}

async fn join(job: &JobId, mut task: JoinHandle<()>, grace: Duration) {
    match tokio::time::timeout(grace, &mut task).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) if error.is_panic() => {
            tracing::error!(job = %job, %error, "the job's task panicked");
        }
        Ok(Err(_)) => {}
        Err(_) => {
            tracing::warn!(job = %job, grace_ms = grace.as_millis() as u64, "the job did not wind down in time; aborting it");
            task.abort();
        }
    }
}

/// A job's task: runs a batch at once, then one interval after each run started (longer after
/// failures retrying cannot fix), until `cancel` fires. A new spec takes effect from the next
/// run, and is scheduled by its own interval. Its plan (next run, failures in a row, latest
/// skipped run) goes on `plans` whenever it changes.
pub async fn run_job<S: PageSource, P: Publisher>(
    runner: Arc<Runner<S, P>>,
    mut spec: watch::Receiver<JobSpec>,
    cancel: CancellationToken,
    plans: Arc<PlanBoard>,
) {
    let job = spec.borrow().id().clone();
    let mut due = Instant::now();
    let mut last_start: Option<Instant> = None;
    // Fetch failures retrying cannot fix, in a row: they lengthen the wait.
    let mut failures_in_a_row = 0u32;
    // Runs in a row that made no complete batch, whatever the reason: shown to users.
    let mut runs_failed = 0u32;
    let mut skipped: Option<SkippedRun> = None;
    let post = |due: Instant, runs_failed: u32, skipped: &Option<SkippedRun>| {
        let wait = due.saturating_duration_since(Instant::now());
        let next = newsflow_core::now_utc() + wait;
        plans.post(&job, Some(next), runs_failed, skipped.clone());
    };
    post(due, runs_failed, &skipped);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            changed = spec.changed() => {
                if changed.is_err() {
                    break;
                }
                failures_in_a_row = 0;
                if let Some(last) = last_start {
                    let interval = spec.borrow().interval().duration();
                    due = Instant::from_std(next_due(last.into_std(), interval, Instant::now().into_std()));
                }
                post(due, runs_failed, &skipped);
                continue;
            }
            () = tokio::time::sleep_until(due) => {}
        }
        let started = Instant::now();
        last_start = Some(started);
        let current = spec.borrow_and_update().clone();
        let late = lateness(due.into_std(), started.into_std());
        crate::metrics::global()
            .schedule_lateness
            .observe(late.as_secs_f64());
        // Boxed: an idle job's task then holds a pointer, not a whole run's state machine,
        // which is what lets one worker keep thousands of jobs in little memory.
        let report = Box::pin(runner.run_batch(&current, late, &cancel)).await;
        let interval = current.interval().duration();
        if matches!(report.end, RunEnd::Complete) {
            runs_failed = 0;
        } else {
            runs_failed = runs_failed.saturating_add(1);
        }
        if !matches!(report.end, RunEnd::Cancelled) {
            crate::metrics::global().job_ran(current.id(), matches!(report.end, RunEnd::Complete));
        }
        let wait = match &report.end {
            RunEnd::Cancelled => break,
            RunEnd::Complete => {
                failures_in_a_row = 0;
                interval
            }
            RunEnd::Skipped(error) => {
                skipped = Some(SkippedRun {
                    at: newsflow_core::now_utc(),
                    error: error.to_info(),
                });
                interval
            }
            RunEnd::Failed(error) if !error.is_retryable() => {
                failures_in_a_row = failures_in_a_row.saturating_add(1);
                let wait = failure_delay(interval, failures_in_a_row);
                tracing::info!(job = %current.id(), failures_in_a_row, next_run_in_secs = wait.as_secs(), "backing off after a failure retrying cannot fix");
                wait
            }
            RunEnd::Failed(_) | RunEnd::PublishFailed(_) => interval,
        };
        due = Instant::from_std(next_due(
            started.into_std(),
            wait,
            Instant::now().into_std(),
        ));
        tracing::debug!(
            job = %current.id(),
            batch = %report.batch_id,
            articles = report.articles,
            pages = report.pages,
            next_run_in_ms = due.saturating_duration_since(Instant::now()).as_millis() as u64,
            "next run scheduled"
        );
        post(due, runs_failed, &skipped);
    }
    plans.gone(&job);
    crate::metrics::global().job_left(&job);
    tracing::info!(job = %job, "job stopped");
}

#[cfg(test)]
mod tests;
