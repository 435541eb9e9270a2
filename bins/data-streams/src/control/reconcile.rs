//! The reconciler: a pass over the in-memory job index (never sled) that starts running jobs
//! without a live owner that runs them, on the least-loaded live workers, with their first
//! run one interval after their latest; and, with `--rebalance`, moves a few running jobs per
//! pass from the busiest worker to the idlest (stop on the old owner first, then start).
//!
//! It runs every `--reconcile-ms`, and also at the moment a worker's timeout runs out, so a
//! dead worker's jobs move one worker timeout after its last heartbeat, not up to a period
//! later.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use newsflow_core::ownership::{Now, ReconcileDecision, Tick};
use newsflow_core::{placement, JobId};
use newsflow_nats::wire::WorkerId;
use tokio_util::sync::CancellationToken;

use super::{job_view, lock, Claim, Control, Pending, Why};
use crate::state::Shared;

/// Starts in flight at most; a pass starts no more than this many (the next pass goes on).
const MAX_STARTS_IN_FLIGHT: usize = 1024;
/// Moves one rebalancing pass plans, when no move is in flight.
pub(super) const MOVES_PER_PASS: usize = 4;

/// What one pass decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Running jobs to start, with the owner they lost (if any), to be cleared first.
    pub starts: Vec<(JobId, Option<WorkerId>)>,
    /// Running jobs to move: `(job, from, to)`.
    pub moves: Vec<(JobId, WorkerId, WorkerId)>,
}

impl Control {
    /// Decides one pass at `now` over the index, NATS connected since `connected_since`:
    /// which jobs to start and which to move. Reads only memory: the index and the workers.
    ///
    /// The index groups running jobs by recorded owner, so only the jobs that can need
    /// anything are looked at: those without an owner, those a live owner's list lacked, and
    /// those of owners that are not alive (all of theirs, once data-streams is settled). A
    /// live owner running all its recorded jobs costs one look-up, whatever their number.
    pub fn plan(&self, shared: &Shared, now: Now, connected_since: Tick) -> Plan {
        let index = shared.store.job_index();
        let mut plan = Plan::default();
        {
            let workers = self.workers();
            let starting = lock(&self.starting);
            let room = MAX_STARTS_IN_FLIGHT.saturating_sub(starting.len());
            let settled = self.rules.settled(now.tick, connected_since);
            // Adds `id`'s start if the rules call for one; `false` once the pass is full.
            let consider = |id: &JobId, plan: &mut Plan| {
                if plan.starts.len() >= room {
                    return false;
                }
                let Some(job) = index.get(id) else {
                    return true;
                };
                if starting.contains(id) {
                    return true;
                }
                let decision =
                    self.rules
                        .reconcile(&job_view(id, job, &workers), now, connected_since);
                let lost = match decision {
                    ReconcileDecision::Fine => return true,
                    ReconcileDecision::Start => None,
                    ReconcileDecision::Reassign(_) => job.owner.as_ref().map(|o| o.id.clone()),
                };
                plan.starts.push((id.clone(), lost));
                true
            };
            let mut room_left = index.unowned().all(|id| consider(id, &mut plan));
            for (worker, owned) in index.owners() {
                if !room_left {
                    break;
                }
                room_left = match workers.get(worker) {
                    Some(view) if self.rules.is_alive(Some(view), now.tick) => view
                        .missing
                        .iter()
                        .filter(|id| owned.jobs.contains(*id))
                        .all(|id| consider(id, &mut plan)),
                    _ if settled => owned.jobs.iter().all(|id| consider(id, &mut plan)),
                    _ => true,
                };
            }
        }
        if self.settings.rebalance && plan.starts.is_empty() && lock(&self.moving).is_empty() {
            let loads: BTreeMap<WorkerId, u64> = self.loads(&index).into_iter().collect();
            let starting = lock(&self.starting);
            let mut picked = HashSet::new();
            for (from, to) in placement::rebalance_moves(&loads, MOVES_PER_PASS) {
                let job = index.owned(&from).and_then(|owned| {
                    owned
                        .jobs
                        .iter()
                        .find(|job| !starting.contains(*job) && !picked.contains(*job))
                        .cloned()
                });
                if let Some(job) = job {
                    picked.insert(job.clone());
                    plan.moves.push((job, from, to));
                }
            }
        }
        plan
    }

    /// One reconciliation pass: plans, then spawns the starts and moves.
    pub(super) fn reconcile(self: &Arc<Self>, shared: &Arc<Shared>) {
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
        let plan = self.plan(shared, now, connected_since);
        for (job, lost) in plan.starts {
            let Some(claim) = Claim::take(&self.starting, job.clone()) else {
                continue;
            };
            if let Some(owner) = &lost {
                tracing::warn!(%job, %owner, "job has no live owner running it; reassigning");
            }
            // Placed now, one by one, so a dead worker's jobs spread over the live ones.
            let target = self.place(&shared.store.job_index());
            let (control, shared) = (self.clone(), shared.clone());
            self.spawn("start", job.clone(), async move {
                let _claim = claim;
                if let Some(owner) = lost {
                    if !control.clear_owner(&shared, &job, &owner) {
                        return;
                    }
                }
                if let Some(client) = shared.nats.get() {
                    control
                        .start_inner(&shared, client, &job, Why::Heal, target)
                        .await;
                }
            });
        }
        for (job, from, to) in plan.moves {
            let Some(claim) = Claim::take(&self.starting, job.clone()) else {
                continue;
            };
            let Some(moving) = Claim::take(&self.moving, job.clone()) else {
                continue;
            };
            let target = Pending::new(&self.pending, to.clone());
            tracing::info!(%job, %from, %to, "moving a job to even out the workers");
            let (control, shared) = (self.clone(), shared.clone());
            self.spawn("move", job.clone(), async move {
                let _claims = (claim, moving);
                // Stopped first: the old owner's ack waits for the run in hand, so the two
                // never run it at once; the new one's first run is one interval after it.
                if !control.stop(&shared, &from, &job).await {
                    return;
                }
                if let Some(client) = shared.nats.get() {
                    control
                        .start_inner(&shared, client, &job, Why::Heal, Some(target))
                        .await;
                }
            });
        }
    }

    /// Clears `job`'s owner if it is still `owner`; `false` when the record could not be
    /// written (starting it elsewhere could then leave two owners; the next pass retries).
    fn clear_owner(&self, shared: &Shared, job: &JobId, owner: &WorkerId) -> bool {
        let cleared = shared.store.update_job(job, |r| {
            if r.worker.as_ref().is_some_and(|w| &w.id == owner) {
                r.worker = None;
            }
        });
        match cleared {
            Ok(_) => {
                crate::events::job_changed(shared, job);
                true
            }
            Err(error) => {
                tracing::error!(%job, %owner, error = format!("{error:#}"), "clearing a lost owner");
                false
            }
        }
    }

    /// When the next live worker's timeout runs out, if any is alive.
    fn next_expiry(&self) -> Option<tokio::time::Instant> {
        let now = self.tick();
        let timeout = self.settings.worker_timeout;
        let latest = self
            .workers()
            .values()
            .filter(|view| view.is_alive(now, timeout))
            .map(|view| view.last_seen)
            .min()?;
        // A millisecond past it, so the worker is surely gone when the pass runs.
        let since_origin = latest.since(Tick::default()) + timeout + Duration::from_millis(1);
        Some(tokio::time::Instant::from_std(self.origin + since_origin))
    }
}

/// Reconciles every `reconcile_every`, and as soon as a worker's timeout runs out, until
/// `shutdown`.
pub async fn run_reconciler(
    control: Arc<Control>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(control.settings.reconcile_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let expiry = control.next_expiry();
        let expired = async {
            match expiry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => control.reconcile(&shared),
            () = expired => control.reconcile(&shared),
        }
    }
}
