//! The publish phase: the raw JetStream publish ceiling (figure 1), measured before and after
//! the worker turns the mock's multi-page batches into acknowledged stream messages
//! (figure 2), and the worker's RSS (figure 8).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use async_nats::jetstream;
use futures::StreamExt as _;
use newsflow_core::BatchMarker;
use newsflow_nats::command::send_start;
use newsflow_nats::stream::{ensure_stream, StreamSettings};
use newsflow_nats::subjects;
use newsflow_nats::wire::StartJob;
use serde_json::json;

use crate::articles::{job_spec, Plan};
use crate::jetstream::{publish_pipelined, scratch_stream, stream_messages, PUBLISH_WINDOW};
use crate::procs::{rss_bytes, RssSampler};
use crate::report::{Row, Unit};
use crate::{stats, Ctx};

/// Counts of the markers seen on `news.batches.>`.
#[derive(Debug, Default)]
pub struct MarkerCounts {
    /// Markers.
    pub markers: AtomicU64,
    /// Articles they count.
    pub articles: AtomicU64,
    /// `failed` markers.
    pub failed: AtomicU64,
}

/// Runs the phase.
pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let (report, sizes) = (&ctx.report, &ctx.sizes);
    let client = async_nats::connect(&ctx.nats_url)
        .await
        .context("connecting to NATS")?;
    let js = jetstream::new(client.clone());
    let stream = ensure_stream(&js, &StreamSettings::default())
        .await
        .context("provisioning NEWS")?;

    // Ceiling and worker alternating, the ceiling on both sides of every worker window: a
    // noisy moment weighs on both sides. Each side is the median of its runs.
    let mut ceilings = vec![publish_ceiling(ctx, &js, "ceiling-0").await?];
    let mut rates = Vec::new();
    let mut windows = Vec::new();
    for round in 0..sizes.rounds {
        // Every window starts from an empty stream.
        stream.purge().await.context("purging NEWS")?;
        let window = worker_window(ctx, &client, &js, round).await?;
        rates.push(window.rate);
        if round == 0 {
            report.row(
                8,
                Row::info("worker RSS at rest", Unit::Bytes, window.rss_rest as f64),
            );
            report.row(
                8,
                Row::info(
                    &format!(
                        "worker RSS under publish load, {} jobs (max)",
                        sizes.publish_jobs
                    ),
                    Unit::Bytes,
                    window.rss_load as f64,
                ),
            );
        }
        windows.push(window.details);
        ceilings.push(publish_ceiling(ctx, &js, &format!("ceiling-{}", round + 1)).await?);
    }
    stream.purge().await.context("purging NEWS")?;
    report.detail(2, "windows", windows);
    report.detail(2, "worker_articles_per_sec", &rates);
    let ceiling = stats::median(&ceilings).context("no ceiling run")?;
    report.row(
        1,
        Row::info(
            "raw JetStream publish, pipelined acks (~1 KB)",
            Unit::MessagesPerSec,
            ceiling,
        ),
    );
    report.detail(1, "publish_ceiling_runs_msgs_per_sec", &ceilings);
    report.row(
        2,
        Row::versus(
            &format!(
                "worker publish, {} jobs x 10 pages x 100",
                sizes.publish_jobs
            ),
            Unit::ArticlesPerSec,
            stats::median(&rates).context("no worker window")?,
            ceiling,
            0.8,
        ),
    );
    Ok(())
}

/// What one worker window measured.
struct Window {
    rate: f64,
    rss_rest: u64,
    rss_load: u64,
    details: serde_json::Value,
}

/// A fresh worker running the publish jobs: articles stored per second over the window.
async fn worker_window(
    ctx: &Ctx,
    client: &async_nats::Client,
    js: &jetstream::Context,
    round: usize,
) -> anyhow::Result<Window> {
    let sizes = &ctx.sizes;
    let mut worker = ctx
        .bins
        .worker(
            &ctx.dir,
            &format!("worker-publish-{round}"),
            &ctx.nats_url,
            &ctx.mock_addr,
        )
        .await;
    tokio::time::sleep(sizes.settle).await;
    let rss_rest = rss_bytes(worker.pid()).context("reading the worker's RSS")?;
    let counts = Arc::new(MarkerCounts::default());
    let mut markers = client
        .subscribe(subjects::BATCHES_WILDCARD)
        .await
        .context("subscribing to markers")?;
    client.flush().await.context("flushing a subscription")?;
    let counter = tokio::spawn({
        let counts = counts.clone();
        async move {
            while let Some(message) = markers.next().await {
                if let Ok(marker) = serde_json::from_slice::<BatchMarker>(&message.payload) {
                    counts.markers.fetch_add(1, Ordering::Relaxed);
                    counts
                        .articles
                        .fetch_add(u64::from(marker.article_count), Ordering::Relaxed);
                    if marker.status != newsflow_core::MarkerStatus::Complete {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    });
    for i in 0..sizes.publish_jobs {
        let spec = job_spec(&format!("pub-{i:03}"), &format!("topic{i}"), 1, 10, 100)?;
        send_start(client, &StartJob::now(spec), Duration::from_secs(5))
            .await
            .with_context(|| format!("starting job pub-{i:03}"))?;
    }
    tokio::time::sleep(sizes.publish_warmup).await;
    let (s0, m0, t0) = (
        stream_messages(js, subjects::STREAM).await?,
        counts.markers.load(Ordering::Relaxed),
        Instant::now(),
    );
    let (a0, f0) = (
        counts.articles.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
    );
    let sampler = RssSampler::start(worker.pid());
    tokio::time::sleep(sizes.publish_window).await;
    let (s1, m1, t1) = (
        stream_messages(js, subjects::STREAM).await?,
        counts.markers.load(Ordering::Relaxed),
        Instant::now(),
    );
    let (a1, f1) = (
        counts.articles.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
    );
    let rss_load = sampler.stop().await;
    counter.abort();
    let status = worker.terminate().await;
    ensure!(status.success(), "the worker exited with {status}");
    let markers_in_window = m1 - m0;
    let stored_articles = (s1 - s0).saturating_sub(markers_in_window);
    let rate = stored_articles as f64 / t1.duration_since(t0).as_secs_f64();
    ensure!(
        markers_in_window > 0,
        "the worker completed no batch in the window"
    );
    Ok(Window {
        rate,
        rss_rest,
        rss_load,
        details: json!({
            "seconds": t1.duration_since(t0).as_secs_f64(),
            "stream_messages": s1 - s0,
            "markers": markers_in_window,
            "failed_markers": f1 - f0,
            "articles_per_batch": (a1 - a0) as f64 / markers_in_window as f64,
            "articles_per_sec": rate,
            // The jobs ask for more than the worker publishes: its capacity is measured.
            "offered_articles_per_sec": sizes.publish_jobs as f64 * 1000.0,
            "saturated": rate < 0.9 * sizes.publish_jobs as f64 * 1000.0,
        }),
    })
}

/// Messages per second of a raw pipelined publish of the configured number of ~1 KB
/// articles into a scratch stream configured like `NEWS`.
async fn publish_ceiling(ctx: &Ctx, js: &jetstream::Context, prefix: &str) -> anyhow::Result<f64> {
    let batches = ctx.sizes.publish_ceiling_messages.div_ceil(1000);
    let plan = Plan::new(prefix, batches, 1, 1000)?;
    let messages: Vec<_> = plan
        .order()
        .into_iter()
        .flat_map(|(job, batch)| (0..plan.articles).map(move |seq| (job.clone(), batch, seq)))
        .map(|(job, batch, seq)| {
            let mut message = ctx.corpus.article_message(&job, batch, seq);
            message.subject = format!("bench.{}", message.subject);
            message
        })
        .collect();
    scratch_stream(js, "BENCH", "bench.>").await?;
    let published = publish_pipelined(js, messages, PUBLISH_WINDOW).await?;
    let _ = js.delete_stream("BENCH").await;
    ensure!(
        published.duplicates == 0,
        "the ceiling's messages were duplicates"
    );
    Ok(published.messages as f64 / published.seconds)
}
