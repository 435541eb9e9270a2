//! Job ownership: start and stop commands, worker heartbeats, and the reconciler that heals a
//! lost owner, a lost message or a stale duplicate within a few heartbeats, and places jobs
//! evenly over the live workers.
//!
//! The rules live in [`newsflow_core::ownership`] and [`newsflow_core::placement`]; this module
//! only reads the store's job index, writes job records, sends commands and keeps track of the
//! tasks it spawns.
//!
//! # Layout
//! - this file: the shared bookkeeping, placement of starts, start and stop commands.
//! - `heartbeats`: what a heartbeat says (a list, or a digest and a fetched list), adopt, fence.
//! - `reconcile`: the periodic pass over the index, dead workers' jobs, rebalancing.

mod heartbeats;
mod reconcile;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use newsflow_core::ownership::{JobView, OwnerView, Ownership, Tick, WorkerView};
use newsflow_core::{placement, BatchId, JobId, JobState};
use newsflow_nats::command::{self, Acked, CommandError};
use newsflow_nats::subjects;
use newsflow_nats::wire::{StartJob, WorkerId};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

pub use heartbeats::run_heartbeats;
pub use reconcile::{run_reconciler, Plan};

use crate::state::Shared;
use crate::store::{IndexedJob, JobIndex, WorkerRef};

/// How ownership is checked.
#[derive(Debug, Clone, Copy)]
pub struct ControlSettings {
    /// A worker not heard from for this long is gone.
    pub worker_timeout: Duration,
    /// How often running jobs are checked for a live owner.
    pub reconcile_every: Duration,
    /// How long a command waits for its ack.
    pub command_timeout: Duration,
    /// Whether running jobs move from workers above the fair share to those below.
    pub rebalance: bool,
}

type Workers = HashMap<WorkerId, WorkerView>;

/// What data-streams knows of workers, from their heartbeats and acks.
pub struct Control {
    settings: ControlSettings,
    rules: Ownership,
    /// The origin of the monotonic clock the rules see.
    origin: Instant,
    /// Since when NATS is connected without a break the reconciler saw: heartbeats sent
    /// while data-streams was cut off never reached it, so a worker is judged gone only once
    /// it had a whole worker timeout to be heard again.
    connected_since: Mutex<Option<Tick>>,
    workers: Mutex<Workers>,
    /// Starts in flight per worker they are addressed to: a worker's load is its recorded
    /// jobs plus these, so concurrent starts spread instead of all picking the same worker.
    pending: Arc<Mutex<HashMap<WorkerId, u64>>>,
    /// Jobs with a start (or a move) in flight: one at a time per job.
    starting: Arc<Mutex<HashSet<JobId>>>,
    /// Moves in flight, a few at a time.
    moving: Arc<Mutex<HashSet<JobId>>>,
    /// Fence stops in flight: a worker heartbeating faster than it acknowledges gets one stop
    /// per job, not one per heartbeat.
    fencing: Arc<Mutex<HashSet<(WorkerId, JobId)>>>,
    /// Workers whose job list is being fetched: one fetch at a time per worker.
    fetching: Arc<Mutex<HashSet<WorkerId>>>,
    /// Held across a job edit (store, stop the owner, start again), so concurrent edits
    /// apply one after the other and the last start carries the last stored spec.
    edits: tokio::sync::Mutex<()>,
    tasks: TaskTracker,
    /// Cancelled when this instance loses control: the start, move, fence and fetch tasks
    /// spawned while it controlled end with it, so a former controller sends no command the
    /// new one did not decide (what they leave half done, heartbeats heal).
    term: Mutex<CancellationToken>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent across a panic (each change is one insert or
    // remove), so a poisoned lock is still good to use.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A key held in an in-flight set, removed when dropped, so a task that fails, panics or is
/// dropped unpolled never leaves its key behind to block the next attempt forever.
struct Claim<K: Eq + Hash> {
    set: Arc<Mutex<HashSet<K>>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Claim<K> {
    /// `None` when `key` is already claimed.
    fn take(set: &Arc<Mutex<HashSet<K>>>, key: K) -> Option<Self> {
        lock(set).insert(key.clone()).then(|| Self {
            set: set.clone(),
            key,
        })
    }
}

impl<K: Eq + Hash> Drop for Claim<K> {
    fn drop(&mut self) {
        lock(&self.set).remove(&self.key);
    }
}

/// A job no start may be sent for but the holder's ([`Control::hold_start`]).
pub struct StartHold(Claim<JobId>);

/// A start addressed to a worker, counted in its load until dropped.
struct Pending {
    loads: Arc<Mutex<HashMap<WorkerId, u64>>>,
    worker: WorkerId,
}

impl Pending {
    fn new(loads: &Arc<Mutex<HashMap<WorkerId, u64>>>, worker: WorkerId) -> Self {
        *lock(loads).entry(worker.clone()).or_default() += 1;
        Self {
            loads: loads.clone(),
            worker,
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut loads = lock(&self.loads);
        if let Some(count) = loads.get_mut(&self.worker) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                loads.remove(&self.worker);
            }
        }
    }
}

/// Why a job is started, which decides when its first run may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// A user created, resumed or edited it: the first run is at once.
    Asked,
    /// The reconciler or a move: one interval after its latest run, so no run is added.
    Heal,
}

/// The view of an indexed job the rules read, with what was heard of its owner.
fn job_view<'a>(id: &'a JobId, job: &'a IndexedJob, workers: &'a Workers) -> JobView<'a, WorkerId> {
    JobView {
        id,
        state: job.state,
        owner: job.owner.as_ref().map(|owner| OwnerView {
            id: &owner.id,
            acked_at: owner.acked_at,
            heard: workers.get(&owner.id),
        }),
    }
}

/// The text of a caught panic.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

impl Control {
    /// Knows no worker yet.
    pub fn new(settings: ControlSettings) -> Self {
        Self {
            settings,
            rules: Ownership::new(settings.worker_timeout),
            origin: Instant::now(),
            connected_since: Mutex::default(),
            workers: Mutex::default(),
            pending: Arc::default(),
            starting: Arc::default(),
            moving: Arc::default(),
            fencing: Arc::default(),
            fetching: Arc::default(),
            edits: tokio::sync::Mutex::new(()),
            tasks: TaskTracker::new(),
            term: Mutex::default(),
        }
    }

    /// Forgets since when NATS is connected, for an instance that starts controlling: it
    /// heard no heartbeat while it did not, so every worker gets a whole worker timeout to be
    /// heard before its jobs are judged lost.
    pub fn forget_connection(&self) {
        *lock(&self.connected_since) = None;
    }

    /// The lock a job edit holds from storing the new spec until its owner runs it.
    pub fn edits(&self) -> &tokio::sync::Mutex<()> {
        &self.edits
    }

    /// Every start and fence task this spawned, so shutdown can close and wait for them.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Ends the control tasks in flight, for an instance that lost control; the tasks
    /// spawned from now on belong to its next term.
    pub fn end_term(&self) {
        std::mem::take(&mut *lock(&self.term)).cancel();
    }

    fn workers(&self) -> MutexGuard<'_, Workers> {
        lock(&self.workers)
    }

    fn tick(&self) -> Tick {
        Tick::new(self.origin.elapsed())
    }

    /// Whether `worker` was heard from recently.
    pub fn is_alive(&self, worker: &WorkerId) -> bool {
        self.rules.is_alive(self.workers().get(worker), self.tick())
    }

    /// How many workers were heard from recently.
    pub fn alive_count(&self) -> usize {
        let now = self.tick();
        self.workers()
            .values()
            .filter(|view| self.rules.is_alive(Some(view), now))
            .count()
    }

    /// Each live worker's load: the running jobs recorded as its own plus starts in flight to
    /// it. Locks the workers, then the pending starts (after the index the caller holds).
    fn loads(&self, index: &JobIndex) -> Vec<(WorkerId, u64)> {
        let now = self.tick();
        let workers = self.workers();
        let pending = lock(&self.pending);
        workers
            .iter()
            .filter(|(_, view)| self.rules.is_alive(Some(view), now))
            .map(|(worker, _)| {
                let load = index.owned_count(worker) + pending.get(worker).copied().unwrap_or(0);
                (worker.clone(), load)
            })
            .collect()
    }

    /// The least-loaded live worker, counted as starting one more job until the result drops.
    fn place(&self, index: &JobIndex) -> Option<Pending> {
        let worker = placement::least_loaded(self.loads(index))?;
        Some(Pending::new(&self.pending, worker))
    }

    /// Runs `task` on the tracker; a panic in it is logged instead of vanishing with the task.
    fn spawn(
        &self,
        what: &'static str,
        job: JobId,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        // Every line of the task names its job (JSON logs carry it in `span`).
        let span = tracing::info_span!("control", task = what, job_id = %job);
        self.spawn_in(span, what, task);
    }

    /// Runs `task` on the tracker in `span`, logging a panic.
    fn spawn_in(
        &self,
        span: tracing::Span,
        what: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        // Unwind safety: what the task shares is behind poison-tolerant locks whose every
        // change is a single insert or remove, and its claim is released by `Drop`.
        let term = lock(&self.term).clone();
        self.tasks.spawn(
            async move {
                tokio::select! {
                    () = term.cancelled() => {
                        tracing::info!(task = what, "control lost; the task is dropped");
                    }
                    outcome = AssertUnwindSafe(task).catch_unwind() => {
                        if let Err(panic) = outcome {
                            tracing::error!(
                                task = what,
                                panic = panic_text(&*panic),
                                "a control task panicked"
                            );
                        }
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Keeps the reconciler from starting `job` until the hold is passed to [`Control::start`]
    /// or dropped. A handler takes it before storing a change after which the job needs a
    /// start (a create, a resume, an edit), so the reconciler cannot find the job ownerless
    /// in between and start it too. `None` when a start of the job is in flight already.
    pub fn hold_start(&self, job: &JobId) -> Option<StartHold> {
        Claim::take(&self.starting, job.clone()).map(StartHold)
    }

    /// Asks the least-loaded live worker to start `job` at once and records the acknowledging
    /// owner. `None` when no worker took it (the reconciler tries again later).
    ///
    /// When another start of the job is in flight (the reconciler found it ownerless first),
    /// waits for that one, up to a command's time, and answers with its owner rather than
    /// starting the job twice.
    ///
    /// With `held` (taken by [`Control::hold_start`] before the change that makes the job need
    /// a start was stored), no other start can be in flight: this one is sent at once.
    pub async fn start(
        &self,
        shared: &Shared,
        job: &JobId,
        held: Option<StartHold>,
    ) -> Option<WorkerRef> {
        let client = shared.nats.get()?;
        if let Some(StartHold(_claim)) = held {
            return self
                .start_inner(shared, client, job, Why::Asked, None)
                .await;
        }
        let deadline = tokio::time::Instant::now() + self.settings.command_timeout;
        let mut waited = false;
        loop {
            if let Some(_claim) = Claim::take(&self.starting, job.clone()) {
                if waited {
                    if let Ok(Some(record)) = shared.store.job(job) {
                        if record.worker.is_some() {
                            return record.worker;
                        }
                    }
                }
                return self
                    .start_inner(shared, client, job, Why::Asked, None)
                    .await;
            }
            if tokio::time::Instant::now() >= deadline {
                return shared.store.job(job).ok().flatten().and_then(|r| r.worker);
            }
            waited = true;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Starts `job` (its claim held by the caller) on `target`, or on the least-loaded live
    /// worker, falling back to the queue group; records the owner that acknowledged.
    async fn start_inner(
        &self,
        shared: &Shared,
        client: &async_nats::Client,
        job: &JobId,
        why: Why,
        target: Option<Pending>,
    ) -> Option<WorkerRef> {
        let record = match shared.store.job(job) {
            Ok(Some(record)) if record.state == JobState::Running => record,
            Ok(_) => return None,
            Err(error) => {
                tracing::error!(%job, error = format!("{error:#}"), "reading a job to start it");
                return None;
            }
        };
        let interval = record.spec.interval().duration();
        let not_before = match why {
            Why::Asked => None,
            Why::Heal => {
                let started = match self.latest_run_start(shared, client, job).await {
                    Ok(started) => started,
                    Err(error) => {
                        tracing::error!(%job, error = format!("{error:#}"), "reading a job's latest batch to start it");
                        return None;
                    }
                };
                placement::not_before(started, interval, newsflow_core::now_utc())
            }
        };
        let mut command = StartJob {
            job: record.spec,
            not_before,
        };
        let acked = match self
            .send_start(shared, client, &mut command, interval, target)
            .await
        {
            Ok(acked) => acked,
            Err(error) => {
                shared.metrics.commands_failed.inc();
                match error {
                    CommandError::NoWorker => {
                        tracing::debug!(%job, "no worker to start the job yet")
                    }
                    other => tracing::warn!(%job, error = %other, "start command not acknowledged"),
                }
                return None;
            }
        };
        shared.metrics.starts_acked.inc();
        let worker = acked.worker_id;
        let now = self.tick();
        self.workers()
            .entry(worker.clone())
            .or_insert_with(|| WorkerView::new(now))
            .started(now, job);
        let owner = WorkerRef {
            id: worker.clone(),
            acked_at: newsflow_core::now_utc(),
        };
        let updated = shared.store.update_job(job, |r| {
            if r.state == JobState::Running {
                r.worker = Some(owner.clone());
                r.updated_at = owner.acked_at;
            }
        });
        match updated {
            Ok(Some(r)) if r.state == JobState::Running => {
                tracing::info!(%job, %worker, not_before = ?command.not_before, "worker acknowledged start");
                crate::events::job_changed(shared, job);
                Some(owner)
            }
            Ok(_) => {
                // Stopped or deleted while the start was in flight: undo it.
                self.stop(shared, &worker, job).await;
                None
            }
            Err(error) => {
                // The worker runs it unrecorded; its next heartbeat adopts or fences it.
                tracing::error!(%job, %worker, error = format!("{error:#}"), "recording the owner of a started job");
                None
            }
        }
    }

    /// Sends `command` to the chosen worker's own start subject, falling back to the queue
    /// group when no worker is known or the chosen one does not take it.
    async fn send_start(
        &self,
        shared: &Shared,
        client: &async_nats::Client,
        command: &mut StartJob,
        interval: Duration,
        target: Option<Pending>,
    ) -> Result<Acked, CommandError> {
        let target = match target {
            Some(target) => Some(target),
            None => self.place(&shared.store.job_index()),
        };
        let timeout = self.settings.command_timeout;
        if let Some(target) = target {
            let worker = target.worker.clone();
            match command::send_start_to(client, &worker, command, timeout).await {
                Ok(acked) => return Ok(acked),
                Err(CommandError::Timeout(_)) => {
                    // It may have started the job and lost the ack: whoever takes it next
                    // runs it no sooner than one interval from now, so no run is doubled.
                    let later = newsflow_core::now_utc() + interval;
                    command.not_before = Some(command.not_before.map_or(later, |t| t.max(later)));
                    tracing::warn!(job = %command.job.id(), %worker, "the chosen worker did not answer a start; trying the queue group");
                }
                Err(error) => {
                    tracing::debug!(job = %command.job.id(), %worker, %error, "the chosen worker did not take a start; trying the queue group")
                }
            }
        }
        command::send_start(client, command, timeout).await
    }

    /// When `job`'s latest run started: the newest batch id (a ULID stamped with its run's
    /// start) in the store, or in the stream when the old owner's last messages are not
    /// ingested yet. The stream is asked for the last article and the last marker of the job.
    async fn latest_run_start(
        &self,
        shared: &Shared,
        client: &async_nats::Client,
        job: &JobId,
    ) -> anyhow::Result<Option<time::OffsetDateTime>> {
        let mut latest = shared.store.newest_batch(job)?.map(BatchId::timestamp_ms);
        let stream = async_nats::jetstream::new(client.clone())
            .get_stream_no_info(subjects::STREAM)
            .await?;
        for subject in [subjects::job_articles(job), subjects::job_batches(job)] {
            let last = tokio::time::timeout(
                self.settings.command_timeout,
                stream.get_last_raw_message_by_subject(&subject),
            )
            .await;
            match last {
                Ok(Ok(message)) => {
                    if let Some(data) = subjects::parse_data(message.subject.as_str()) {
                        latest = latest.max(Some(data.batch.timestamp_ms()));
                    }
                }
                // None published yet (or the stream lost them): the store's answer stands.
                Ok(Err(error)) => {
                    tracing::debug!(%job, %subject, %error, "no last message of the job in the stream")
                }
                Err(_) => {
                    tracing::warn!(%job, %subject, "the stream did not say what the job published last in time")
                }
            }
        }
        Ok(latest.map(newsflow_core::from_unix_ms))
    }

    /// Tells `worker` to stop `job`; `true` when it acknowledged.
    pub async fn stop(&self, shared: &Shared, worker: &WorkerId, job: &JobId) -> bool {
        let Some(client) = shared.nats.get() else {
            return false;
        };
        shared.metrics.stops_sent.inc();
        match command::send_stop(client, worker, job, self.settings.command_timeout).await {
            Ok(_) => {
                if let Some(view) = self.workers().get_mut(worker) {
                    view.stopped(job);
                }
                tracing::info!(%job, %worker, "worker acknowledged stop");
                true
            }
            Err(error) => {
                shared.metrics.commands_failed.inc();
                tracing::warn!(%job, %worker, %error, "stop command not acknowledged");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
