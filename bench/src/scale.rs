//! The scale phase (figure 6): thousands of jobs on one worker, its RSS per job, and how
//! late their scheduled runs start (the `Newsflow-Lateness-Ms` header of every marker).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use futures::StreamExt as _;
use newsflow_nats::command::send_start;
use newsflow_nats::stream::{ensure_stream, StreamSettings};
use newsflow_nats::subjects;
use newsflow_nats::wire::StartJob;
use serde_json::json;

use crate::articles::job_spec;
use crate::procs::{rss_bytes, RssSampler};
use crate::report::{Row, Unit};
use crate::{stats, Ctx};

/// The worker's marker header saying how late a run started.
const LATENESS_HEADER: &str = "Newsflow-Lateness-Ms";
/// Start commands in flight at once.
const STARTS_IN_FLIGHT: usize = 64;

#[derive(Default)]
struct Runs {
    per_job: HashMap<String, u32>,
    first: Vec<f64>,
    scheduled: Vec<f64>,
}

/// Runs the phase.
pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let (report, sizes) = (&ctx.report, &ctx.sizes);
    let jobs = sizes.scale_jobs;
    let interval = Duration::from_secs(sizes.scale_interval_secs);
    let client = async_nats::connect(&ctx.nats_url)
        .await
        .context("connecting to NATS")?;
    ensure_stream(
        &async_nats::jetstream::new(client.clone()),
        &StreamSettings::default(),
    )
    .await
    .context("provisioning NEWS")?;
    // One article per run: the figure is about scheduling and memory, not bulk.
    let (_mock, mock_addr) = ctx
        .bins
        .mock(
            &ctx.dir,
            "mock-scale",
            &["--total-results", "1", "--max-results", "1000"],
        )
        .await;
    let mut worker = ctx
        .bins
        .worker(&ctx.dir, "worker-scale", &ctx.nats_url, &mock_addr)
        .await;
    tokio::time::sleep(ctx.sizes.settle).await;
    let rss_rest = rss_bytes(worker.pid()).context("reading the worker's RSS")?;

    let runs = Arc::new(Mutex::new(Runs::default()));
    let mut markers = client
        .subscribe(subjects::BATCHES_WILDCARD)
        .await
        .context("subscribing to markers")?;
    client.flush().await.context("flushing a subscription")?;
    let collector = tokio::spawn({
        let runs = runs.clone();
        async move {
            while let Some(message) = markers.next().await {
                let Some(job) = message.subject.split('.').nth(2) else {
                    continue;
                };
                let lateness = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(LATENESS_HEADER))
                    .and_then(|v| v.as_str().parse::<f64>().ok());
                let mut runs = runs.lock().unwrap_or_else(PoisonError::into_inner);
                let count = runs.per_job.entry(job.to_owned()).or_insert(0);
                *count += 1;
                let first = *count == 1;
                if let Some(lateness) = lateness {
                    if first {
                        runs.first.push(lateness);
                    } else {
                        runs.scheduled.push(lateness);
                    }
                }
            }
        }
    });

    let sampler = RssSampler::start(worker.pid());
    let starting = Instant::now();
    let specs = (0..jobs)
        .map(|i| {
            job_spec(
                &format!("s{i:05}"),
                "scale",
                sizes.scale_interval_secs,
                1,
                100,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut acks = futures::stream::iter(specs.into_iter().map(|spec| {
        let client = client.clone();
        async move { send_start(&client, &StartJob::now(spec), Duration::from_secs(30)).await }
    }))
    .buffer_unordered(STARTS_IN_FLIGHT);
    while let Some(ack) = acks.next().await {
        ack.context("a start command")?;
    }
    let started = Instant::now();
    eprintln!(
        "{jobs} jobs started in {:.1} s; waiting for their scheduled runs",
        started.duration_since(starting).as_secs_f64()
    );

    // Every job's second run is due one interval after its first; wait for all of them.
    let deadline = started + interval * 2 + Duration::from_secs(30);
    let complete = loop {
        let done = {
            let runs = runs.lock().unwrap_or_else(PoisonError::into_inner);
            runs.per_job.values().filter(|&&n| n >= 2).count()
        };
        if done >= jobs {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rss_loaded = rss_bytes(worker.pid()).context("reading the worker's RSS")?;
    let rss_max = sampler.stop().await;
    collector.abort();
    let (first, scheduled, covered) = {
        let runs = runs.lock().unwrap_or_else(PoisonError::into_inner);
        (
            runs.first.clone(),
            runs.scheduled.clone(),
            runs.per_job.values().filter(|&&n| n >= 2).count(),
        )
    };
    ensure!(
        complete,
        "only {covered} of {jobs} jobs had a scheduled run within {:?}",
        deadline.duration_since(started)
    );
    let per_job = rss_loaded.saturating_sub(rss_rest) as f64 / jobs as f64;
    let late = stats::summarize(scheduled).context("no scheduled run")?;
    report.row(
        6,
        Row::at_most(
            &format!("worker RSS per job, {jobs} jobs"),
            Unit::Bytes,
            per_job,
            2048.0,
        ),
    );
    report.row(
        6,
        Row::at_most("schedule lateness p99", Unit::Ms, late.p99, 50.0),
    );
    report.detail(
        6,
        "worker",
        json!({
            "jobs": jobs,
            "interval_secs": sizes.scale_interval_secs,
            "start_commands_seconds": started.duration_since(starting).as_secs_f64(),
            "rss_rest": rss_rest,
            "rss_loaded": rss_loaded,
            "rss_max": rss_max,
            "scheduled_lateness_ms": late,
            "first_run_lateness_ms": stats::summarize(first),
        }),
    );
    let status = worker.terminate().await;
    ensure!(status.success(), "the worker exited with {status}");
    Ok(())
}
