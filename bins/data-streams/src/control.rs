//! Job ownership: start and stop commands, worker heartbeats, and the reconciler that heals a
//! lost owner, a lost message or a stale duplicate within a few heartbeats.
//!
//! The rules live in [`newsflow_core::ownership`]; this module only reads and writes the store,
//! sends commands and keeps track of the tasks it spawns.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use newsflow_core::ownership::{
    HeartbeatDecision, JobView, Now, OwnerView, Ownership, ReconcileDecision, Tick, WorkerView,
};
use newsflow_core::{JobId, JobState};
use newsflow_nats::command::{self, CommandError};
use newsflow_nats::subjects;
use newsflow_nats::wire::{parse_capped, Ack, Heartbeat, StartJob, WorkerId, MAX_HEARTBEAT_BYTES};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::state::Shared;
use crate::store::{JobRecord, WorkerRef};

/// How ownership is checked.
#[derive(Debug, Clone, Copy)]
pub struct ControlSettings {
    /// A worker not heard from for this long is gone.
    pub worker_timeout: Duration,
    /// How often running jobs are checked for a live owner.
    pub reconcile_every: Duration,
    /// How long a command waits for its ack.
    pub command_timeout: Duration,
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
    /// Jobs with a start in flight: one at a time per job.
    starting: Arc<Mutex<HashSet<JobId>>>,
    /// Fence stops in flight: a worker heartbeating faster than it acknowledges gets one stop
    /// per job, not one per heartbeat.
    fencing: Arc<Mutex<HashSet<(WorkerId, JobId)>>>,
    /// Held across a job edit (store, stop the owner, start again), so concurrent edits
    /// apply one after the other and the last start carries the last stored spec.
    edits: tokio::sync::Mutex<()>,
    tasks: TaskTracker,
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

/// The view of a stored job the rules read, with what was heard of its owner.
fn job_view<'a>(record: &'a JobRecord, workers: &'a Workers) -> JobView<'a, WorkerId> {
    JobView {
        id: record.spec.id(),
        state: record.state,
        owner: record.worker.as_ref().map(|owner| OwnerView {
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
            starting: Arc::default(),
            fencing: Arc::default(),
            edits: tokio::sync::Mutex::new(()),
            tasks: TaskTracker::new(),
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

    /// Runs `task` on the tracker; a panic in it is logged instead of vanishing with the task.
    fn spawn(
        &self,
        what: &'static str,
        job: JobId,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        // Every line of the task names its job (JSON logs carry it in `span`).
        let span = tracing::info_span!("control", task = what, job_id = %job);
        // Unwind safety: what the task shares is behind poison-tolerant locks whose every
        // change is a single insert or remove, and its claim is released by `Drop`.
        self.tasks.spawn(
            async move {
                if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
                    tracing::error!(%job, task = what, panic = panic_text(&*panic), "a control task panicked");
                }
            }
            .instrument(span),
        );
    }

    /// Asks one worker to start `job` and records the acknowledging owner. `None` when no
    /// worker took it (the reconciler tries again later).
    ///
    /// When another start of the job is in flight (the reconciler found it ownerless first),
    /// waits for that one, up to a command's time, and answers with its owner rather than
    /// starting the job twice.
    pub async fn start(&self, shared: &Shared, job: &JobId) -> Option<WorkerRef> {
        let client = shared.nats.get()?;
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
                return self.start_inner(shared, client, job).await;
            }
            if tokio::time::Instant::now() >= deadline {
                return shared.store.job(job).ok().flatten().and_then(|r| r.worker);
            }
            waited = true;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    async fn start_inner(
        &self,
        shared: &Shared,
        client: &async_nats::Client,
        job: &JobId,
    ) -> Option<WorkerRef> {
        let record = match shared.store.job(job) {
            Ok(Some(record)) if record.state == JobState::Running => record,
            Ok(_) => return None,
            Err(error) => {
                tracing::error!(%job, error = format!("{error:#}"), "reading a job to start it");
                return None;
            }
        };
        let acked = match command::send_start(
            client,
            &StartJob::now(record.spec),
            self.settings.command_timeout,
        )
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
            .started(now, job.clone());
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
                tracing::info!(%job, %worker, "worker acknowledged start");
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

    /// What the rules say of `worker` reporting the job stored as `record`.
    fn heartbeat_decision(
        &self,
        record: Option<&JobRecord>,
        worker: &WorkerId,
        now: Tick,
    ) -> HeartbeatDecision {
        let workers = self.workers();
        let view = record.map(|r| job_view(r, &workers));
        self.rules.on_heartbeat(view.as_ref(), worker, now)
    }

    /// Handles a heartbeat: remembers what the worker runs, then keeps, adopts or fences each
    /// job it reports.
    fn on_heartbeat(self: &Arc<Self>, shared: &Arc<Shared>, heartbeat: Heartbeat) {
        let now = self.tick();
        let worker = heartbeat.worker_id;
        // A heartbeat without its list (a worker with many jobs) is handled from its digest.
        let jobs = heartbeat.jobs.unwrap_or_default();
        self.workers()
            .entry(worker.clone())
            .or_insert_with(|| WorkerView::new(now))
            .heartbeat(now, jobs.iter().cloned());
        for job in jobs {
            let record = match shared.store.job(&job) {
                Ok(record) => record,
                Err(error) => {
                    tracing::error!(%job, %worker, error = format!("{error:#}"), "reading a job a worker reports");
                    continue;
                }
            };
            match self.heartbeat_decision(record.as_ref(), &worker, now) {
                HeartbeatDecision::Keep => {}
                HeartbeatDecision::Adopt => self.adopt(shared, &job, &worker, now),
                HeartbeatDecision::Fence(reason) => {
                    let Some(claim) = Claim::take(&self.fencing, (worker.clone(), job.clone()))
                    else {
                        continue;
                    };
                    tracing::info!(%job, %worker, ?reason, "worker runs a job it should not; telling it to stop");
                    let (control, shared, worker) = (self.clone(), shared.clone(), worker.clone());
                    self.spawn("fence", job.clone(), async move {
                        let _claim = claim;
                        control.stop(&shared, &worker, &job).await;
                    });
                }
            }
        }
    }

    /// Records `worker` as the owner of `job`, if the fresh record still calls for it.
    fn adopt(&self, shared: &Shared, job: &JobId, worker: &WorkerId, now: Tick) {
        let adopted = WorkerRef {
            id: worker.clone(),
            acked_at: newsflow_core::now_utc(),
        };
        let mut changed = false;
        let updated = shared.store.update_job(job, |r| {
            // Decided again under the store's job lock: a start or another heartbeat may
            // have given the job a live owner since it was read.
            if self.heartbeat_decision(Some(&*r), worker, now) == HeartbeatDecision::Adopt {
                r.worker = Some(adopted.clone());
                r.updated_at = adopted.acked_at;
                changed = true;
            }
        });
        match updated {
            Ok(_) if changed => {
                tracing::info!(%job, %worker, "job adopted by the worker that runs it");
                crate::events::job_changed(shared, job);
            }
            // Its next heartbeat is decided against the new owner.
            Ok(_) => tracing::debug!(%job, %worker, "job got an owner before it could be adopted"),
            Err(error) => {
                tracing::error!(%job, %worker, error = format!("{error:#}"), "recording the adoption of a job")
            }
        }
    }

    /// One reconciliation pass: every running job without a live owner that runs it is
    /// (re)started on some worker.
    fn reconcile(self: &Arc<Self>, shared: &Arc<Shared>) {
        let now = Now {
            tick: self.tick(),
            wall: newsflow_core::now_utc(),
        };
        let connected_since = {
            let mut since = lock(&self.connected_since);
            if !shared.nats_connected() {
                *since = None;
                return;
            }
            *since.get_or_insert(now.tick)
        };
        // With no live worker a start has no taker; a worker's first heartbeat ends this.
        if self.alive_count() == 0 {
            return;
        }
        let jobs = match shared.store.all_jobs() {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "listing jobs to reconcile");
                return;
            }
        };
        for record in jobs {
            let decision = {
                let workers = self.workers();
                self.rules
                    .reconcile(&job_view(&record, &workers), now, connected_since)
            };
            let job = record.spec.id();
            match decision {
                ReconcileDecision::Fine => continue,
                ReconcileDecision::Start => {}
                ReconcileDecision::Reassign(lost) => {
                    let Some(owner) = &record.worker else {
                        continue;
                    };
                    tracing::warn!(%job, owner = %owner.id, ?lost, "job has no live owner running it; reassigning");
                    let cleared = shared.store.update_job(job, |r| {
                        if r.worker.as_ref().is_some_and(|w| w.id == owner.id) {
                            r.worker = None;
                        }
                    });
                    if let Err(error) = cleared {
                        // Starting it elsewhere now could leave two owners; the next pass retries.
                        tracing::error!(%job, owner = %owner.id, error = format!("{error:#}"), "clearing a lost owner");
                        continue;
                    }
                    crate::events::job_changed(shared, job);
                }
            }
            if lock(&self.starting).contains(job) {
                continue;
            }
            let (control, shared, job) = (self.clone(), shared.clone(), job.clone());
            self.spawn("start", job.clone(), async move {
                control.start(&shared, &job).await;
            });
        }
    }
}

/// Listens to heartbeats until `shutdown`.
pub async fn run_heartbeats(
    control: Arc<Control>,
    shared: Arc<Shared>,
    client: async_nats::Client,
    shutdown: CancellationToken,
) {
    let mut subscription = match client.subscribe(subjects::HEARTBEAT).await {
        Ok(subscription) => subscription,
        Err(error) => {
            tracing::error!(%error, "cannot subscribe to heartbeats; ownership will not heal");
            return;
        }
    };
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return,
            message = subscription.next() => match message { Some(m) => m, None => return },
        };
        match parse_capped::<Heartbeat>(&message.payload, MAX_HEARTBEAT_BYTES) {
            Ok(heartbeat) => control.on_heartbeat(&shared, heartbeat),
            Err(error) => {
                shared.metrics.invalid_heartbeats.inc();
                tracing::warn!(%error, "ignoring an invalid heartbeat");
                command::reply(&client, message.reply.as_ref(), &Ack::Err(error.to_info())).await;
            }
        }
    }
}

/// Reconciles every `reconcile_every` until `shutdown`.
pub async fn run_reconciler(
    control: Arc<Control>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(control.settings.reconcile_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => control.reconcile(&shared),
        }
    }
}

#[cfg(test)]
mod tests;
