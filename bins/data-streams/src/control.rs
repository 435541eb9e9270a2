//! Job ownership: start and stop commands, worker heartbeats, and the reconciler that heals a
//! lost owner, a lost message or a stale duplicate within a few heartbeats.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use newsflow_core::{JobId, JobState};
use newsflow_nats::command::{self, CommandError};
use newsflow_nats::subjects;
use newsflow_nats::wire::{parse_capped, Ack, Heartbeat, StartJob, WorkerId, MAX_HEARTBEAT_BYTES};
use tokio_util::sync::CancellationToken;

use crate::state::{Metrics, Shared};
use crate::store::WorkerRef;

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

struct Seen {
    at: Instant,
    jobs: HashSet<JobId>,
}

/// What data-streams knows of workers, from their heartbeats and acks.
pub struct Control {
    settings: ControlSettings,
    /// Since when NATS is connected without a break the reconciler saw: heartbeats sent
    /// while data-streams was cut off never reached it, so a worker is judged gone only once
    /// it had a whole worker timeout to be heard again.
    connected_since: Mutex<Option<Instant>>,
    workers: Mutex<HashMap<WorkerId, Seen>>,
    starting: Mutex<HashSet<JobId>>,
}

impl Control {
    /// Knows no worker yet.
    pub fn new(settings: ControlSettings) -> Self {
        Self {
            settings,
            connected_since: Mutex::default(),
            workers: Mutex::default(),
            starting: Mutex::default(),
        }
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<WorkerId, Seen>> {
        self.workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `worker` was heard from recently.
    pub fn is_alive(&self, worker: &WorkerId) -> bool {
        self.workers()
            .get(worker)
            .is_some_and(|seen| seen.at.elapsed() < self.settings.worker_timeout)
    }

    /// How many workers were heard from recently.
    pub fn alive_count(&self) -> usize {
        self.workers()
            .values()
            .filter(|seen| seen.at.elapsed() < self.settings.worker_timeout)
            .count()
    }

    /// Whether `worker`, alive, says it runs `job`.
    fn runs(&self, worker: &WorkerId, job: &JobId) -> bool {
        self.workers().get(worker).is_some_and(|seen| {
            seen.at.elapsed() < self.settings.worker_timeout && seen.jobs.contains(job)
        })
    }

    fn note(&self, worker: &WorkerId, jobs: impl IntoIterator<Item = JobId>, replace: bool) {
        let mut workers = self.workers();
        let seen = workers.entry(worker.clone()).or_insert_with(|| Seen {
            at: Instant::now(),
            jobs: HashSet::new(),
        });
        seen.at = Instant::now();
        if replace {
            seen.jobs.clear();
        }
        seen.jobs.extend(jobs);
    }

    /// Asks one worker to start `job` and records the acknowledging owner. `None` when no
    /// worker took it (the reconciler tries again later).
    pub async fn start(&self, shared: &Shared, job: &JobId) -> Option<WorkerRef> {
        let client = shared.nats.get()?;
        if !self
            .starting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(job.clone())
        {
            return None;
        }
        let result = self.start_inner(shared, client, job).await;
        self.starting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(job);
        result
    }

    async fn start_inner(
        &self,
        shared: &Shared,
        client: &async_nats::Client,
        job: &JobId,
    ) -> Option<WorkerRef> {
        let record = shared
            .store
            .job(job)
            .ok()
            .flatten()
            .filter(|r| r.state == JobState::Running)?;
        match command::send_start(
            client,
            &StartJob { job: record.spec },
            self.settings.command_timeout,
        )
        .await
        {
            Ok(acked) => {
                Metrics::inc(&shared.metrics.starts_acked);
                self.note(&acked.worker_id, [job.clone()], false);
                let owner = WorkerRef {
                    id: acked.worker_id.clone(),
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
                        tracing::info!(%job, worker = %acked.worker_id, "worker acknowledged start");
                        Some(owner)
                    }
                    _ => {
                        // Stopped or deleted while the start was in flight: undo it.
                        self.stop(shared, &acked.worker_id, job).await;
                        None
                    }
                }
            }
            Err(error) => {
                Metrics::inc(&shared.metrics.commands_failed);
                match error {
                    CommandError::NoWorker => {
                        tracing::debug!(%job, "no worker to start the job yet")
                    }
                    other => tracing::warn!(%job, error = %other, "start command not acknowledged"),
                }
                None
            }
        }
    }

    /// Tells `worker` to stop `job`; `true` when it acknowledged.
    pub async fn stop(&self, shared: &Shared, worker: &WorkerId, job: &JobId) -> bool {
        let Some(client) = shared.nats.get() else {
            return false;
        };
        Metrics::inc(&shared.metrics.stops_sent);
        match command::send_stop(client, worker, job, self.settings.command_timeout).await {
            Ok(_) => {
                if let Some(seen) = self.workers().get_mut(worker) {
                    seen.jobs.remove(job);
                }
                tracing::info!(%job, %worker, "worker acknowledged stop");
                true
            }
            Err(error) => {
                Metrics::inc(&shared.metrics.commands_failed);
                tracing::warn!(%job, %worker, %error, "stop command not acknowledged");
                false
            }
        }
    }

    /// Handles a heartbeat: remembers what the worker runs, adopts jobs that lost their owner,
    /// and fences jobs the worker should not run (stopped, deleted, or owned by another live
    /// worker).
    fn on_heartbeat(self: &Arc<Self>, shared: &Arc<Shared>, heartbeat: Heartbeat) {
        let worker = heartbeat.worker_id.clone();
        self.note(&worker, heartbeat.jobs.iter().cloned(), true);
        for job in heartbeat.jobs {
            let record = match shared.store.job(&job) {
                Ok(record) => record,
                Err(error) => {
                    tracing::error!(
                        error = format!("{error:#}"),
                        "reading a job for a heartbeat"
                    );
                    continue;
                }
            };
            let fence = match record {
                None => true,
                Some(r) if r.state == JobState::Stopped => true,
                Some(r) => match &r.worker {
                    Some(owner) if owner.id == worker => false,
                    Some(owner) if self.is_alive(&owner.id) => true,
                    _ => {
                        let adopted = WorkerRef {
                            id: worker.clone(),
                            acked_at: newsflow_core::now_utc(),
                        };
                        let _ = shared.store.update_job(&job, |r| {
                            if r.state == JobState::Running {
                                r.worker = Some(adopted.clone());
                                r.updated_at = adopted.acked_at;
                            }
                        });
                        tracing::info!(%job, %worker, "job adopted by the worker that runs it");
                        false
                    }
                },
            };
            if fence {
                tracing::info!(%job, %worker, "worker runs a job it should not; telling it to stop");
                let (control, shared, worker) = (self.clone(), shared.clone(), worker.clone());
                tokio::spawn(async move { control.stop(&shared, &worker, &job).await });
            }
        }
    }

    /// One reconciliation pass: every running job without a live owner that runs it is
    /// (re)started on some worker.
    async fn reconcile(self: &Arc<Self>, shared: &Arc<Shared>) {
        let connected_since = {
            let mut since = self
                .connected_since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !shared.nats_connected() {
                *since = None;
                return;
            }
            *since.get_or_insert_with(Instant::now)
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
        let settled = connected_since.elapsed() >= self.settings.worker_timeout;
        for record in jobs.into_iter().filter(|r| r.state == JobState::Running) {
            let job = record.spec.id().clone();
            let needs_start = match &record.worker {
                None => true,
                Some(owner) => {
                    let forgotten = self.is_alive(&owner.id)
                        && !self.runs(&owner.id, &job)
                        && (newsflow_core::now_utc() - owner.acked_at)
                            > self.settings.worker_timeout;
                    let gone = settled && !self.is_alive(&owner.id);
                    if gone || forgotten {
                        tracing::warn!(%job, owner = %owner.id, gone, "job has no live owner running it; reassigning");
                        let _ = shared.store.update_job(&job, |r| {
                            if r.worker.as_ref().is_some_and(|w| w.id == owner.id) {
                                r.worker = None;
                            }
                        });
                    }
                    gone || forgotten
                }
            };
            if needs_start {
                let (control, shared) = (self.clone(), shared.clone());
                tokio::spawn(async move { control.start(&shared, &job).await });
            }
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
                shared
                    .metrics
                    .invalid_heartbeats
                    .fetch_add(1, Ordering::Relaxed);
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
            _ = tick.tick() => control.reconcile(&shared).await,
        }
    }
}
