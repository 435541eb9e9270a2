//! The control phase. Figure 9: data-streams' reconcile pass, heartbeat handling and a
//! `GET /jobs` page over a store of 100,000 jobs, timed in-process with the service's own code
//! on a real sled store (no broker: every worker's digest matches, as in a steady state).
//! Figure 10: job-move time with the default timings: a worker killed with SIGKILL, to its
//! jobs' owners changing and to their next batches completing on the survivors.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use data_streams::control::{Control, ControlSettings};
use data_streams::state::{Shared, SharedSettings};
use data_streams::store::{JobRecord, Store, WorkerRef};
use newsflow_core::ownership::{Now, Tick};
use newsflow_core::{JobSpec, JobState};
use newsflow_nats::wire::{Heartbeat, WorkerId};
use newsflow_tests::Api;
use serde_json::json;

use crate::procs::wait_ready;
use crate::report::{Row, Unit};
use crate::stats::percentile;
use crate::Ctx;

/// Workers the reconcile store's jobs are spread over.
const WORKERS: usize = 4;
/// Passes timed.
const PASSES: usize = 20;

/// Runs the phase.
pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let (jobs, dir) = (ctx.sizes.control_jobs, ctx.dir.join("ds-control"));
    let timings = tokio::task::spawn_blocking(move || reconcile_timings(&dir, jobs))
        .await
        .context("the reconcile timing panicked")??;
    let report = &ctx.report;
    report.row(
        9,
        Row::at_most(
            &format!("reconcile pass over {jobs} jobs (p50)"),
            Unit::Ms,
            timings.pass_p50_ms,
            50.0,
        ),
    );
    report.row(
        9,
        Row::info(
            &format!("reconcile pass over {jobs} jobs (max of {PASSES})"),
            Unit::Ms,
            timings.pass_max_ms,
        ),
    );
    report.row(
        9,
        Row::info(
            &format!(
                "reconcile pass over {jobs} jobs, every owner gone (plans the first 1024 starts)"
            ),
            Unit::Ms,
            timings.gone_pass_ms,
        ),
    );
    report.row(
        9,
        Row::info(
            "heartbeat with a matching digest",
            Unit::Ms,
            timings.heartbeat_ms,
        ),
    );
    report.row(
        9,
        Row::compared(
            "GET /jobs store page of 100 (median), at the end vs the start",
            Unit::Ms,
            timings.last_page_ms,
            timings.first_page_ms,
        ),
    );
    report.detail(9, "jobs", jobs);
    report.detail(9, "fill_seconds", timings.fill_seconds);
    job_move(ctx).await
}

struct Timings {
    fill_seconds: f64,
    pass_p50_ms: f64,
    pass_max_ms: f64,
    gone_pass_ms: f64,
    heartbeat_ms: f64,
    first_page_ms: f64,
    last_page_ms: f64,
}

fn reconcile_timings(dir: &Path, jobs: usize) -> anyhow::Result<Timings> {
    let store = Store::open(dir)?;
    let filled = Instant::now();
    let workers: Vec<WorkerId> = (0..WORKERS)
        .map(|i| WorkerId::parse(&format!("bench-w{i}")).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    for i in 0..jobs {
        let spec = JobSpec::from_create_request(&json!({
            "id": format!("job-{i:06}"), "endpoint": "everything", "params": {"q": "x"},
            "interval_secs": 3600
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let now = newsflow_core::now_utc();
        let record = JobRecord {
            spec,
            state: JobState::Running,
            worker: Some(WorkerRef {
                id: workers[i % WORKERS].clone(),
                acked_at: now,
            }),
            created_at: now,
            updated_at: now,
        };
        ensure!(store.create_job(&record)?, "job {i} exists already");
    }
    let fill_seconds = filled.elapsed().as_secs_f64();
    let (ingest, _) = tokio::sync::mpsc::channel(1);
    let shared = Arc::new(Shared::new(
        store,
        ingest,
        SharedSettings {
            api_token: None,
            max_body_bytes: 64 * 1024,
            max_in_flight: 1,
            default_keep_batches: newsflow_core::KeepBatches::DEFAULT,
            max_sse_clients: 1,
        },
    ));
    let control = Arc::new(Control::new(ControlSettings {
        worker_timeout: Duration::from_secs(5),
        reconcile_every: Duration::from_secs(1),
        command_timeout: Duration::from_secs(2),
        rebalance: false,
    }));
    let beats = 1000;
    let started = Instant::now();
    for round in 0..beats {
        let worker = &workers[round % WORKERS];
        let digest = shared.store.job_index().owned_digest(worker);
        let heartbeat = Heartbeat::new(worker.clone(), Vec::new, digest, newsflow_core::now_utc());
        control
            .on_heartbeat(&shared, heartbeat)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let heartbeat_ms = started.elapsed().as_secs_f64() * 1000.0 / beats as f64;
    let mut passes = Vec::with_capacity(PASSES);
    for _ in 0..PASSES {
        let now = Now {
            tick: Tick::new(Duration::from_millis(1)),
            wall: newsflow_core::now_utc(),
        };
        let started = Instant::now();
        let plan = control.plan(&shared, now, Tick::default());
        passes.push(started.elapsed());
        ensure!(
            plan.starts.is_empty() && plan.moves.is_empty(),
            "a steady state planned {} starts",
            plan.starts.len()
        );
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // An hour on, every worker is silent: all their jobs are looked at, the first 1024 started.
    let gone = Now {
        tick: Tick::new(Duration::from_secs(3600)),
        wall: newsflow_core::now_utc(),
    };
    let started = Instant::now();
    let plan = control.plan(&shared, gone, Tick::default());
    let gone_pass_ms = ms(started.elapsed());
    ensure!(
        plan.starts.len() == 1024.min(jobs),
        "planned {} starts",
        plan.starts.len()
    );
    let mut passes: Vec<f64> = passes.into_iter().map(ms).collect();
    passes.sort_by(f64::total_cmp);
    // The median of 21 reads of the same page: one read is mostly noise.
    let page = |after: Option<&[u8]>| -> anyhow::Result<f64> {
        let mut reads = Vec::with_capacity(21);
        for _ in 0..21 {
            let started = Instant::now();
            let (records, _) = shared.store.jobs_page(after, 100)?;
            ensure!(records.len() == 100, "a short page");
            reads.push(ms(started.elapsed()));
        }
        reads.sort_by(f64::total_cmp);
        Ok(reads[reads.len() / 2])
    };
    let last_after = format!("job-{:06}", jobs.saturating_sub(101));
    Ok(Timings {
        fill_seconds,
        pass_p50_ms: percentile(&passes, 50.0).unwrap_or(0.0),
        pass_max_ms: passes.last().copied().unwrap_or(0.0),
        gone_pass_ms,
        heartbeat_ms,
        first_page_ms: page(None)?,
        last_page_ms: page(Some(last_after.as_bytes()))?,
    })
}

/// Figure 10: two workers with default heartbeats under data-streams with default timings;
/// the one owning the most jobs is killed. On a broker of its own, so that it can run beside
/// the other phases in a quick run.
async fn job_move(ctx: &Ctx) -> anyhow::Result<()> {
    let (report, bins) = (&ctx.report, &ctx.bins);
    let jobs = ctx.sizes.move_jobs;
    let interval_secs = ctx.sizes.move_interval_secs;
    let data_dir = ctx.dir.join("ds-move");
    let nats = newsflow_tests::NatsServer::start_in(&ctx.dir.join("nats-move")).await;
    let nats_url = nats.url();
    let (mut ds, addr) = bins
        .data_streams(&ctx.dir, "data-streams-move", &nats_url, &data_dir)
        .await;
    wait_ready(
        &mut ds,
        &addr,
        Duration::from_millis(50),
        Duration::from_secs(60),
    )
    .await?;
    let mut workers = Vec::new();
    for i in 0..3 {
        let name = format!("worker-move-{i}");
        let proc = bins
            .worker(&ctx.dir, &name, &nats_url, &ctx.mock_addr)
            .await;
        let id = proc
            .ready_line()
            .and_then(|line| line.split("id=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .context("a worker's ready line names its id")?
            .to_owned();
        workers.push((id, proc));
    }
    let api = Api::new(&addr);
    let ids: Vec<String> = (0..jobs).map(|i| format!("move-{i}")).collect();
    for id in &ids {
        let (status, body) = api
            .create_job(&json!({
                "id": id, "endpoint": "everything", "params": {"q": "bitcoin"},
                "interval_secs": interval_secs, "max_pages": 1, "page_size": 10
            }))
            .await;
        ensure!(status.as_u16() == 201, "creating {id}: {status} {body}");
    }
    // Every job ran once, so each has a latest batch and a steady owner.
    for id in &ids {
        wait_until(Duration::from_secs(60), || async {
            api.latest_or_none(id).await.is_some()
        })
        .await
        .with_context(|| format!("{id}'s first batch"))?;
    }
    let mut owners = std::collections::BTreeMap::<String, Vec<String>>::new();
    for id in &ids {
        let owner = api.job(id).await["worker"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        owners.entry(owner).or_default().push(id.clone());
    }
    let (victim, moved) = owners
        .iter()
        .max_by_key(|(_, jobs)| jobs.len())
        .map(|(w, jobs)| (w.clone(), jobs.clone()))
        .context("no job has an owner")?;
    let slot = workers
        .iter_mut()
        .find(|(id, _)| *id == victim)
        .context("the victim is one of the bench's workers")?;
    let before: Vec<(String, String)> = {
        let mut latest = Vec::new();
        for id in &moved {
            let batch = api.latest_or_none(id).await.unwrap_or_default();
            latest.push((id.clone(), batch));
        }
        latest
    };
    slot.1.kill9();
    let killed = Instant::now();
    let mut owner_moved = Vec::new();
    let mut next_batch = Vec::new();
    let mut pending: BTreeSet<usize> = (0..before.len()).collect();
    let mut reassigned: BTreeSet<usize> = BTreeSet::new();
    let deadline = killed + Duration::from_secs(60 + 2 * interval_secs);
    while !pending.is_empty() && Instant::now() < deadline {
        for i in pending.clone() {
            let (id, old) = &before[i];
            if !reassigned.contains(&i) {
                let owner = api.job(id).await["worker"]["id"]
                    .as_str()
                    .map(str::to_owned);
                if owner.is_some_and(|o| o != victim) {
                    reassigned.insert(i);
                    owner_moved.push(killed.elapsed());
                }
            }
            if api.latest_or_none(id).await.is_some_and(|b| &b != old) {
                pending.remove(&i);
                next_batch.push(killed.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(
        pending.is_empty(),
        "{} of {} jobs had no new batch within the deadline",
        pending.len(),
        before.len()
    );
    owner_moved.sort();
    next_batch.sort();
    let max_ms = |v: &[Duration]| v.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    report.row(
        10,
        Row::at_most(
            "kill -9 -> every job of it owned by a live worker (max)",
            Unit::Ms,
            max_ms(&owner_moved),
            6000.0,
        ),
    );
    report.row(
        10,
        Row::info(
            &format!("kill -9 -> next batch of each of its jobs complete (max; interval {interval_secs} s)"),
            Unit::Ms,
            max_ms(&next_batch),
        ),
    );
    report.detail(10, "jobs_moved", moved.len());
    report.detail(
        10,
        "timings",
        json!({"heartbeat_ms": 2000, "worker_timeout_ms": 5000, "reconcile_ms": 1000}),
    );
    drop(workers);
    drop(ds);
    Ok(())
}

async fn wait_until<F, Fut>(within: Duration, mut probe: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !probe().await {
        ensure!(Instant::now() < deadline, "not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The id of a job's latest complete batch, if any.
trait LatestOrNone {
    async fn latest_or_none(&self, job: &str) -> Option<String>;
}

impl LatestOrNone for Api {
    async fn latest_or_none(&self, job: &str) -> Option<String> {
        let (status, body) = self.get(&format!("/jobs/{job}")).await;
        if !status.is_success() {
            return None;
        }
        body["latest_batch"]["id"].as_str().map(str::to_owned)
    }
}
