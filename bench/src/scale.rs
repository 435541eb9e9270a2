//! The scale phase (figure 6): 10,000 and 100,000 jobs on one worker (a fresh worker per
//! size), with long intervals and first runs spread over one interval (`StartJob.not_before`)
//! so that a steady trickle comes due. Measured: the worker's RSS per job, how late runs start
//! (the `Newsflow-Lateness-Ms` header of every marker) and the size of its heartbeats.

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
/// The most RSS a job may cost (issue 14).
const RSS_PER_JOB_MAX: f64 = 1024.0;
/// The latest a scheduled run may start at the 99th percentile (issue 14).
const LATENESS_P99_MAX_MS: f64 = 50.0;

/// Runs the phase: one worker per size in `scale_jobs`.
pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
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
    for &jobs in &ctx.sizes.scale_jobs {
        one_size(ctx, &client, &mock_addr, jobs)
            .await
            .with_context(|| format!("{jobs} jobs"))?;
    }
    Ok(())
}

/// Markers seen: when each arrived and the lateness it carried.
type Seen = Arc<Mutex<Vec<(Instant, f64)>>>;

async fn one_size(
    ctx: &Ctx,
    client: &async_nats::Client,
    mock_addr: &str,
    jobs: usize,
) -> anyhow::Result<()> {
    let (report, sizes) = (&ctx.report, &ctx.sizes);
    let per_sec = sizes.scale_due_per_sec.max(1);
    let interval_secs = (jobs as u64 / per_sec).clamp(1, 86_400);
    let mut worker = ctx
        .bins
        .worker(
            &ctx.dir,
            &format!("worker-scale-{jobs}"),
            &ctx.nats_url,
            mock_addr,
        )
        .await;
    tokio::time::sleep(sizes.settle).await;
    let rss_rest = rss_bytes(worker.pid()).context("reading the worker's RSS")?;

    let seen: Seen = Arc::default();
    let mut markers = client
        .subscribe(subjects::BATCHES_WILDCARD)
        .await
        .context("subscribing to markers")?;
    let beats_seen: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let mut beats = client
        .subscribe(subjects::HEARTBEAT)
        .await
        .context("subscribing to heartbeats")?;
    client.flush().await.context("flushing the subscriptions")?;
    let marker_collector = tokio::spawn({
        let seen = Arc::clone(&seen);
        async move {
            while let Some(message) = markers.next().await {
                let lateness = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(LATENESS_HEADER))
                    .and_then(|v| v.as_str().parse::<f64>().ok());
                if let Some(lateness) = lateness {
                    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                    seen.push((Instant::now(), lateness));
                }
            }
        }
    });
    let beat_collector = tokio::spawn({
        let beats_seen = Arc::clone(&beats_seen);
        async move {
            while let Some(message) = beats.next().await {
                let count = serde_json::from_slice::<serde_json::Value>(&message.payload)
                    .ok()
                    .and_then(|beat| beat["count"].as_u64())
                    .unwrap_or(0);
                let mut seen = beats_seen.lock().unwrap_or_else(PoisonError::into_inner);
                seen.push((message.payload.len(), count));
            }
        }
    });

    let sampler = RssSampler::start(worker.pid());
    let starting = Instant::now();
    let first_due = newsflow_core::now_utc();
    let commands = (0..jobs)
        .map(|i| {
            let offset_ms = (interval_secs * 1000).saturating_mul(i as u64) / jobs as u64;
            let spec = job_spec(&format!("s{i:06}"), "scale", interval_secs, 1, 100)?;
            Ok(StartJob {
                job: spec,
                not_before: Some(first_due + time::Duration::milliseconds(offset_ms as i64)),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut acks = futures::stream::iter(commands.into_iter().map(|command| {
        let client = client.clone();
        async move { send_start(&client, &command, Duration::from_secs(30)).await }
    }))
    .buffer_unordered(STARTS_IN_FLIGHT);
    while let Some(ack) = acks.next().await {
        ack.context("a start command")?;
    }
    let start_secs = starting.elapsed().as_secs_f64();
    eprintln!(
        "{jobs} jobs started in {start_secs:.1} s (interval {interval_secs} s, {per_sec} due per second); measuring for {:?}",
        sizes.scale_window
    );

    // The window opens once the starts' own load has passed.
    tokio::time::sleep(sizes.settle).await;
    let opened = Instant::now();
    tokio::time::sleep(sizes.scale_window).await;
    let closed = Instant::now();
    let rss_loaded = rss_bytes(worker.pid()).context("reading the worker's RSS")?;
    let rss_max = sampler.stop().await;
    marker_collector.abort();
    beat_collector.abort();
    let lateness: Vec<f64> = seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(at, _)| *at >= opened && *at <= closed)
        .map(|(_, lateness)| *lateness)
        .collect();
    let heartbeat_bytes = beats_seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(_, count)| *count == jobs as u64)
        .map(|(len, _)| *len)
        .max();
    let runs_per_sec = lateness.len() as f64 / closed.duration_since(opened).as_secs_f64();
    let late = stats::summarize(lateness).context("no run in the window")?;
    let heartbeat_bytes = heartbeat_bytes.context("no heartbeat counting every job")?;
    let per_job = rss_loaded.saturating_sub(rss_rest) as f64 / jobs as f64;

    report.row(
        6,
        Row::at_most(
            &format!("worker RSS per job, {jobs} jobs"),
            Unit::Bytes,
            per_job,
            RSS_PER_JOB_MAX,
        ),
    );
    report.row(
        6,
        Row::info(
            &format!("schedule lateness p50, {jobs} jobs"),
            Unit::Ms,
            late.p50,
        ),
    );
    report.row(
        6,
        Row::at_most(
            &format!("schedule lateness p99, {jobs} jobs"),
            Unit::Ms,
            late.p99,
            LATENESS_P99_MAX_MS,
        ),
    );
    report.row(
        6,
        Row::info(
            &format!("heartbeat size, {jobs} jobs"),
            Unit::Bytes,
            heartbeat_bytes as f64,
        ),
    );
    report.detail(
        6,
        &format!("worker_{jobs}"),
        json!({
            "jobs": jobs,
            "interval_secs": interval_secs,
            "due_per_sec": per_sec,
            "runs_per_sec_measured": runs_per_sec,
            "start_commands_seconds": start_secs,
            "rss_rest": rss_rest,
            "rss_loaded": rss_loaded,
            "rss_max": rss_max,
            "scheduled_lateness_ms": late,
            "heartbeat_bytes": heartbeat_bytes,
        }),
    );
    let status = worker.terminate().await;
    ensure!(status.success(), "the worker exited with {status}");
    Ok(())
}
