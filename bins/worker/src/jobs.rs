//! The jobs running on this worker, and the one timer that runs them.
//!
//! A job is a compact record in an ordered map (its spec, when it is due, its failures) and a
//! key in one [`DelayQueue`]; a single scheduler task ([`Registry::drive`]) takes due jobs
//! off the queue and spawns each run as a task, at most `max_runs` at once. A job is never
//! run twice at once: while its run is in hand it is off the queue, and it goes back on when
//! the run ends, due by the schedule's rules (`newsflow_core::schedule`). So 100,000 idle jobs
//! cost 100,000 records and timer entries, not 100,000 tasks.
//!
//! The lock guards the map, the queue and the digest together; it is never held across an
//! `.await`. A start or stop takes effect under it, so the next heartbeat shows it.

use std::collections::{BTreeMap, HashMap};
use std::future::poll_fn;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use newsflow_core::digest::JobSetDigest;
use newsflow_core::schedule::{failure_delay, lateness, next_due};
use newsflow_core::{JobId, JobSpec};
use newsflow_nats::wire::{JobsPage, SkippedRun};
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::time::delay_queue::{DelayQueue, Key};

use crate::plans::PlanBoard;
use crate::run::{PageSource, Publisher, RunEnd, RunReport, Runner};
use packed::PackedSpec;

/// The furthest ahead a first run is put off by `not_before`: the timer holds deadlines up to
/// about two years out, and a job's own waits are at most a day.
pub const MAX_NOT_BEFORE: Duration = Duration::from_secs(366 * 86_400);

/// One run of a job: given its spec, how late it starts and its cancellation, runs a batch.
pub type RunFn = Arc<
    dyn Fn(JobSpec, Duration, CancellationToken) -> BoxFuture<'static, RunReport> + Send + Sync,
>;

/// Runs of `runner`, as the registry starts them.
pub fn runs_of<S, P>(runner: Arc<Runner<S, P>>) -> RunFn
where
    S: PageSource + 'static,
    P: Publisher + 'static,
{
    Arc::new(
        move |spec: JobSpec, late, cancel: CancellationToken| -> BoxFuture<'static, RunReport> {
            let runner = Arc::clone(&runner);
            // Boxed: a run's state machine lives only while the run does.
            Box::pin(async move { runner.run_batch(&spec, late, &cancel).await })
        },
    )
}

/// What a start command changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// The job was not running here; it is now.
    New,
    /// It was running with another spec; the next run uses the new one.
    Updated,
    /// It was running with this very spec.
    Unchanged,
}

/// A run in hand.
struct Running {
    serial: u64,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// One job: what it is and where its schedule stands.
struct Entry {
    spec: PackedSpec,
    /// When its next run is (or its run in hand was) due.
    due: Instant,
    last_start: Option<Instant>,
    /// Fetch failures retrying cannot fix, in a row: they lengthen the wait.
    failures_in_a_row: u32,
    /// Runs in a row that made no complete batch, whatever the reason: shown to users.
    runs_failed: u32,
    /// The spec changed while a run was in hand: the next wait is the new spec's interval.
    respecced: bool,
    skipped: Option<Box<SkippedRun>>,
    /// Its place on the queue; `None` while its run is in hand (or waits for a stopped run of
    /// the same id to end).
    key: Option<Key>,
    run: Option<Box<Running>>,
}

struct State {
    jobs: BTreeMap<JobId, Entry>,
    digest: JobSetDigest,
    queue: DelayQueue<JobId>,
    /// Runs of stopped jobs still winding down: a job started again meanwhile waits for them.
    ending: HashMap<JobId, u64>,
}

/// The jobs of this worker.
pub struct Registry {
    state: Mutex<State>,
    run: RunFn,
    plans: Arc<PlanBoard>,
    runs: Arc<Semaphore>,
    tracker: TaskTracker,
    serials: AtomicU64,
}

impl Registry {
    /// An empty registry whose runs are `run`, at most `max_runs` at once, posting plans on
    /// `plans`. Nothing runs until [`Registry::drive`] does.
    pub fn new(run: RunFn, plans: Arc<PlanBoard>, max_runs: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                jobs: BTreeMap::new(),
                digest: JobSetDigest::default(),
                queue: DelayQueue::new(),
                ending: HashMap::new(),
            }),
            run,
            plans,
            runs: Arc::new(Semaphore::new(max_runs.max(1))),
            tracker: TaskTracker::new(),
            serials: AtomicU64::new(0),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Each operation leaves the state whole, so a panic elsewhere cannot corrupt it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `spec` here: registers it, due at once or at `not_before`, or hands a registered
    /// job the new spec for its next run (`not_before` then changes nothing). The job is in
    /// the next heartbeat when this returns.
    pub fn start(&self, spec: JobSpec, not_before: Option<OffsetDateTime>) -> Started {
        let mut state = self.state();
        let State {
            jobs,
            queue,
            digest,
            ..
        } = &mut *state;
        let now = Instant::now();
        let id = spec.id().clone();
        let spec = PackedSpec::pack(&spec);
        if let Some(entry) = jobs.get_mut(&id) {
            if entry.spec == spec {
                return Started::Unchanged;
            }
            entry.spec = spec;
            entry.failures_in_a_row = 0;
            match (&entry.key, entry.last_start) {
                (Some(key), Some(last)) => {
                    let interval = entry.spec.interval();
                    entry.due =
                        Instant::from_std(next_due(last.into_std(), interval, now.into_std()));
                    queue.reset_at(key, entry.due);
                }
                _ => entry.respecced = entry.run.is_some(),
            }
            self.post_plan(&id, entry);
            return Started::Updated;
        }
        let due = not_before.map_or(now, |at| {
            let wait = Duration::try_from(at - newsflow_core::now_utc()).unwrap_or(Duration::ZERO);
            now + wait.min(MAX_NOT_BEFORE)
        });
        let entry = Entry {
            spec,
            due,
            last_start: None,
            failures_in_a_row: 0,
            runs_failed: 0,
            respecced: false,
            skipped: None,
            key: Some(queue.insert_at(id.clone(), due)),
            run: None,
        };
        self.post_plan(&id, &entry);
        digest.insert(&id);
        jobs.insert(id, entry);
        Started::New
    }

    /// Stops `job` and waits up to `grace` for its run in hand to end, so nothing of it is
    /// published after this returns. `false` when it was not running here.
    pub async fn stop(&self, job: &JobId, grace: Duration) -> bool {
        let running = {
            let mut state = self.state();
            let Some(entry) = state.jobs.remove(job) else {
                return false;
            };
            self.unregister(&mut state, job, entry)
        };
        if let Some(run) = running {
            run.cancel.cancel();
            self.wait_for(job, run, grace).await;
        }
        self.withdraw(job);
        true
    }

    /// Stops every job, waiting up to `grace` in all for the runs in hand; returns how many
    /// jobs there were.
    pub async fn stop_all(&self, grace: Duration) -> usize {
        let (jobs, running) = {
            let mut state = self.state();
            let jobs = std::mem::take(&mut state.jobs);
            let mut running = Vec::new();
            let mut ids = Vec::with_capacity(jobs.len());
            for (job, entry) in jobs {
                if let Some(run) = self.unregister(&mut state, &job, entry) {
                    run.cancel.cancel();
                    running.push((job.clone(), run));
                }
                ids.push(job);
            }
            (ids, running)
        };
        let deadline = Instant::now() + grace;
        for (job, run) in running {
            let left = deadline.saturating_duration_since(Instant::now());
            self.wait_for(&job, run, left).await;
        }
        for job in &jobs {
            self.withdraw(job);
        }
        jobs.len()
    }

    /// Takes a removed job off the queue and out of the digest; its run in hand, if any, is
    /// now ending.
    fn unregister(&self, state: &mut State, job: &JobId, entry: Entry) -> Option<Box<Running>> {
        state.digest.remove(job);
        if let Some(key) = &entry.key {
            state.queue.remove(key);
        }
        let run = entry.run?;
        state.ending.insert(job.clone(), run.serial);
        Some(run)
    }

    /// Waits up to `grace` for a cancelled run to end; aborts it after that.
    async fn wait_for(&self, job: &JobId, mut run: Box<Running>, grace: Duration) {
        match tokio::time::timeout(grace, &mut run.task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) if error.is_panic() => {
                tracing::error!(job = %job, %error, "the job's run panicked");
            }
            Ok(Err(_)) => {}
            Err(_) => {
                tracing::warn!(job = %job, grace_ms = grace.as_millis() as u64, "the job's run did not wind down in time; aborting it");
                run.task.abort();
                // An aborted task ends at its next await: its run is dropped before this returns.
                let _ = (&mut run.task).await;
            }
        }
        // A run that ended by itself has said so already; an aborted or panicked one has not.
        let mut state = self.state();
        self.ended(&mut state, job, run.serial);
    }

    /// A stopped job's plan and metrics go, unless it was started here again meanwhile.
    fn withdraw(&self, job: &JobId) {
        let state = self.state();
        if !state.jobs.contains_key(job) {
            self.plans.gone(job);
            crate::metrics::global().job_left(job);
            tracing::info!(job = %job, "job stopped");
        }
    }

    /// A stopped job's run `serial` ended: a registration of the same id waiting for it is
    /// due now.
    fn ended(&self, state: &mut State, job: &JobId, serial: u64) {
        if state.ending.get(job) != Some(&serial) {
            return;
        }
        state.ending.remove(job);
        let State { jobs, queue, .. } = state;
        if let Some(entry) = jobs.get_mut(job) {
            if entry.key.is_none() && entry.run.is_none() {
                entry.key = Some(queue.insert_at(job.clone(), entry.due));
            }
        }
    }

    /// The ids of the jobs running here, sorted.
    #[cfg(test)]
    pub fn job_ids(&self) -> Vec<JobId> {
        self.state().jobs.keys().cloned().collect()
    }

    /// How many jobs run here.
    pub fn count(&self) -> usize {
        self.state().jobs.len()
    }

    /// The digest of the jobs running here and, when there are at most `list_max`, their
    /// sorted ids: both of the same moment.
    pub fn job_set(&self, list_max: usize) -> (JobSetDigest, Option<Vec<JobId>>) {
        let state = self.state();
        let listed = (state.jobs.len() <= list_max).then(|| state.jobs.keys().cloned().collect());
        (state.digest, listed)
    }

    /// Up to `limit` ids of the jobs running here, sorted, after `after`.
    pub fn page(&self, after: Option<&JobId>, limit: usize) -> JobsPage {
        let state = self.state();
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut ids = state
            .jobs
            .range::<JobId, _>((from, Bound::Unbounded))
            .map(|(id, _)| id);
        let jobs: Vec<JobId> = ids.by_ref().take(limit).cloned().collect();
        let next = match (ids.next(), jobs.last()) {
            (Some(_), Some(last)) => Some(last.clone()),
            _ => None,
        };
        JobsPage { jobs, next }
    }

    /// The scheduler: starts each job's run when it is due, at most `max_runs` at once, until
    /// `stop` fires. Runs in hand are left to [`Registry::stop_all`].
    pub async fn drive(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let permit = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                permit = Arc::clone(&self.runs).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let mut permit = Some(permit);
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                () = poll_fn(|cx| self.poll_start(cx, &mut permit)) => {}
            }
        }
        self.tracker.close();
    }

    /// Starts the next due job's run with `permit`; pending until one is due.
    fn poll_start(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        permit: &mut Option<OwnedSemaphorePermit>,
    ) -> Poll<()> {
        let mut state = self.state();
        loop {
            // An empty queue registers the waker too: the next insert wakes it.
            let Poll::Ready(Some(expired)) = state.queue.poll_expired(cx) else {
                return Poll::Pending;
            };
            let job = expired.into_inner();
            if self.start_run(&mut state, job, permit) {
                return Poll::Ready(());
            }
        }
    }

    /// Spawns the run of `job`, taken off the queue; `false` when it cannot run now (a
    /// stopped run of the same id is still ending: it goes back on the queue when that ends).
    fn start_run(
        self: &Arc<Self>,
        state: &mut State,
        job: JobId,
        permit: &mut Option<OwnedSemaphorePermit>,
    ) -> bool {
        let Some(entry) = state.jobs.get_mut(&job) else {
            return false;
        };
        entry.key = None;
        if state.ending.contains_key(&job) {
            return false;
        }
        let started = Instant::now();
        let spec = match entry.spec.unpack() {
            Ok(spec) => spec,
            Err(error) => {
                tracing::error!(job = %job, %error, "the job's packed spec does not parse; its run is skipped");
                entry.due = started + entry.spec.interval();
                entry.key = Some(state.queue.insert_at(job, entry.due));
                return false;
            }
        };
        let late = lateness(entry.due.into_std(), started.into_std());
        crate::metrics::global()
            .schedule_lateness
            .observe(late.as_secs_f64());
        entry.last_start = Some(started);
        let serial = self.serials.fetch_add(1, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        let run = (self.run)(spec, late, cancel.clone());
        let permit = permit.take();
        let registry = Arc::clone(self);
        let task = self.tracker.spawn(async move {
            let report = run.await;
            drop(permit);
            registry.finish(&job, serial, started, report);
        });
        entry.run = Some(Box::new(Running {
            serial,
            cancel,
            task,
        }));
        true
    }

    /// Puts a job whose run ended back on the queue, due by the schedule's rules, and posts
    /// its plan.
    fn finish(&self, job: &JobId, serial: u64, started: Instant, report: RunReport) {
        let mut state = self.state();
        if state.ending.get(job) == Some(&serial) {
            self.ended(&mut state, job, serial);
            return;
        }
        let State { jobs, queue, .. } = &mut *state;
        let Some(entry) = jobs.get_mut(job) else {
            return;
        };
        if entry.run.as_ref().map(|run| run.serial) != Some(serial) {
            return;
        }
        entry.run = None;
        let wait = entry.settle(job, &report.end);
        let now = Instant::now();
        entry.due = Instant::from_std(next_due(started.into_std(), wait, now.into_std()));
        entry.key = Some(queue.insert_at(job.clone(), entry.due));
        tracing::debug!(
            job = %job,
            batch = %report.batch_id,
            articles = report.articles,
            pages = report.pages,
            next_run_in_ms = entry.due.saturating_duration_since(now).as_millis() as u64,
            "next run scheduled"
        );
        self.post_plan(job, entry);
    }

    /// Posts `job`'s plan: its next run, failures in a row and latest skipped run.
    fn post_plan(&self, job: &JobId, entry: &Entry) {
        let wait = entry.due.saturating_duration_since(Instant::now());
        let next = newsflow_core::now_utc() + wait;
        let skipped = entry.skipped.as_deref().cloned();
        self.plans.post(job, Some(next), entry.runs_failed, skipped);
    }
}

impl Entry {
    /// Counts how a run ended and returns the wait before the next: one interval after each
    /// run started, longer after failures retrying cannot fix.
    fn settle(&mut self, job: &JobId, end: &RunEnd) -> Duration {
        let interval = self.spec.interval();
        if matches!(end, RunEnd::Complete) {
            self.runs_failed = 0;
        } else if !matches!(end, RunEnd::Cancelled) {
            self.runs_failed = self.runs_failed.saturating_add(1);
        }
        if !matches!(end, RunEnd::Cancelled) {
            crate::metrics::global().job_failures(job, self.runs_failed);
        }
        let wait = match end {
            RunEnd::Complete => {
                self.failures_in_a_row = 0;
                interval
            }
            RunEnd::Skipped(error) => {
                self.skipped = Some(Box::new(SkippedRun {
                    at: newsflow_core::now_utc(),
                    error: error.to_info(),
                }));
                interval
            }
            RunEnd::Failed(error) if !error.is_retryable() => {
                self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
                let wait = failure_delay(interval, self.failures_in_a_row);
                tracing::info!(job = %job, failures_in_a_row = self.failures_in_a_row, next_run_in_secs = wait.as_secs(), "backing off after a failure retrying cannot fix");
                wait
            }
            RunEnd::Failed(_) | RunEnd::PublishFailed(_) | RunEnd::Cancelled => interval,
        };
        if std::mem::take(&mut self.respecced) {
            self.failures_in_a_row = 0;
            return interval;
        }
        wait
    }
}

mod packed;
#[cfg(test)]
mod tests;
