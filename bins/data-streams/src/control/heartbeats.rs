//! What a heartbeat says. A worker whose digest equals the digest of the jobs recorded as its
//! own runs exactly those: its liveness is refreshed and nothing is done per job. Otherwise
//! its list (in the heartbeat up to 1,000 jobs, else fetched in pages from
//! `news.ctl.worker.<id>.jobs`) is decided job by job: keep, adopt or fence.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt as _;
use newsflow_core::ownership::{HeartbeatDecision, Tick, WorkerView};
use newsflow_core::JobId;
use newsflow_nats::command::{self, CommandError};
use newsflow_nats::subjects;
use newsflow_nats::wire::{
    parse_capped, Ack, Heartbeat, ListJobs, PayloadError, WorkerId, LIST_JOBS_MAX,
    MAX_HEARTBEAT_BYTES,
};
use tokio_util::sync::CancellationToken;

use super::{job_view, Claim, Control};
use crate::state::Shared;
use crate::store::WorkerRef;

/// The most pages one fetch of a worker's list reads (ten million jobs at the largest page).
const MAX_LIST_PAGES: usize = 1000;

impl Control {
    /// Handles a heartbeat: remembers what the worker runs, then keeps, adopts or fences each
    /// job it runs that is not recorded as its own. An error when the heartbeat is invalid
    /// (neither list nor digest, or a list that contradicts its digest).
    pub fn on_heartbeat(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        heartbeat: Heartbeat,
    ) -> Result<(), PayloadError> {
        let digest = heartbeat.job_set()?;
        let now = self.tick();
        let worker = heartbeat.worker_id;
        let recorded = shared.store.job_index().owned_digest(&worker);
        if digest == recorded {
            self.workers()
                .entry(worker)
                .or_insert_with(|| WorkerView::new(now))
                .heartbeat(now, digest.count(), []);
            return Ok(());
        }
        match heartbeat.jobs {
            Some(jobs) => self.apply_list(shared, &worker, &jobs, now),
            None => {
                self.workers()
                    .entry(worker.clone())
                    .or_insert_with(|| WorkerView::new(now))
                    .seen(now);
                self.fetch_list(shared, worker);
            }
        }
        Ok(())
    }

    /// Remembers that `worker` was heard from, and nothing of what it runs: what a read
    /// replica keeps, so its `newsflow_workers_alive` is true and, once it takes control,
    /// live workers are known from its first tick.
    pub fn observe(&self, worker: WorkerId) {
        let now = self.tick();
        self.workers()
            .entry(worker)
            .or_insert_with(|| WorkerView::new(now))
            .seen(now);
    }

    /// Decides about every job of `worker`'s whole list, heard at `now`.
    fn apply_list(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        worker: &WorkerId,
        jobs: &[JobId],
        now: Tick,
    ) {
        let decisions: Vec<(JobId, HeartbeatDecision)> = {
            let index = shared.store.job_index();
            let mut workers = self.workers();
            let listed: HashSet<&JobId> = jobs.iter().collect();
            let missing: Vec<JobId> = index
                .owned(worker)
                .map(|owned| {
                    owned
                        .jobs
                        .iter()
                        .filter(|job| !listed.contains(job))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            workers
                .entry(worker.clone())
                .or_insert_with(|| WorkerView::new(now))
                .heartbeat(now, listed.len() as u64, missing);
            listed
                .into_iter()
                .filter_map(|job| {
                    let view = index.get(job).map(|j| job_view(job, j, &workers));
                    let decision = self.rules.on_heartbeat(view.as_ref(), worker, now);
                    (decision != HeartbeatDecision::Keep).then(|| (job.clone(), decision))
                })
                .collect()
        };
        for (job, decision) in decisions {
            match decision {
                HeartbeatDecision::Keep => {}
                HeartbeatDecision::Adopt => self.adopt(shared, &job, worker, now),
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

    /// Fetches `worker`'s list in pages, unless a fetch is in flight, and decides about it.
    fn fetch_list(self: &Arc<Self>, shared: &Arc<Shared>, worker: WorkerId) {
        let Some(client) = shared.nats.get().cloned() else {
            return;
        };
        let Some(claim) = Claim::take(&self.fetching, worker.clone()) else {
            return;
        };
        let (control, shared) = (self.clone(), shared.clone());
        let span = tracing::info_span!("control", task = "fetch jobs", worker_id = %worker);
        self.spawn_in(span, "fetch jobs", async move {
            let _claim = claim;
            match control.list_of(&client, &worker).await {
                Ok(jobs) => {
                    tracing::info!(%worker, jobs = jobs.len(), "fetched the list of a worker whose digest differs from the record");
                    control.apply_list(&shared, &worker, &jobs, control.tick());
                }
                Err(error) => {
                    shared.metrics.commands_failed.inc();
                    tracing::warn!(%worker, %error, "could not fetch a worker's list of jobs");
                }
            }
        });
    }

    /// Every job `worker` runs, page by page.
    async fn list_of(
        &self,
        client: &async_nats::Client,
        worker: &WorkerId,
    ) -> Result<Vec<JobId>, CommandError> {
        let mut jobs = Vec::new();
        let mut ask = ListJobs {
            after: None,
            limit: LIST_JOBS_MAX,
        };
        for _ in 0..MAX_LIST_PAGES {
            let page =
                command::list_jobs(client, worker, &ask, self.settings.command_timeout).await?;
            jobs.extend(page.jobs);
            match page.next {
                Some(next) if Some(&next) != ask.after.as_ref() => ask.after = Some(next),
                Some(_) => {
                    return Err(CommandError::Other(
                        "the worker's next page starts where the last one did".to_owned(),
                    ))
                }
                None => return Ok(jobs),
            }
        }
        Err(CommandError::Other(format!(
            "the worker's list is longer than {MAX_LIST_PAGES} pages"
        )))
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
            let workers = self.workers();
            let indexed = crate::store::IndexedJob::of(r);
            let view = job_view(r.spec.id(), &indexed, &workers);
            if self.rules.on_heartbeat(Some(&view), worker, now) == HeartbeatDecision::Adopt {
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
}

/// Listens to heartbeats until `shutdown`, on every instance. While this instance controls
/// jobs it decides about each one ([`Control::on_heartbeat`]); a read replica only remembers
/// who was heard from ([`Control::observe`]), and leaves invalid heartbeats to the controller.
pub async fn run_heartbeats(
    control: Arc<Control>,
    shared: Arc<Shared>,
    client: async_nats::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut subscription = client.subscribe(subjects::HEARTBEAT).await?;
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            message = subscription.next() => match message {
                Some(message) => message,
                None => return Ok(()),
            },
        };
        let parsed = parse_capped::<Heartbeat>(&message.payload, MAX_HEARTBEAT_BYTES);
        if !shared.role.controls() {
            if let Ok(heartbeat) = parsed {
                control.observe(heartbeat.worker_id);
            }
            continue;
        }
        if let Err(error) = parsed.and_then(|heartbeat| control.on_heartbeat(&shared, heartbeat)) {
            shared.metrics.invalid_heartbeats.inc();
            tracing::warn!(%error, "ignoring an invalid heartbeat");
            command::reply(&client, message.reply.as_ref(), &Ack::Err(error.to_info())).await;
        }
    }
}
