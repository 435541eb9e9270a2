//! Figure 12: everything at once on the data-streams of the ingest phase. For one window:
//! batches published at half its ingest ceiling, marker → visible sampled on a job of its
//! own, readers reading the latest page back to back, writers creating, patching and deleting
//! jobs (ten requests a second each), and SSE clients on `GET /events`. Each figure is set beside the same figure measured
//! alone earlier in the run: none may be more than 20% worse.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use async_nats::jetstream;
use newsflow_core::JobId;
use serde_json::json;

use crate::articles::{publish_articles, publish_marker, BatchClock, Plan};
use crate::http::{self, Client, ReadSpec, SseClients};
use crate::ingest::{first_page, marker_samples};
use crate::procs::read_metric;
use crate::report::{Axis, Plot, Row, Series, Unit};
use crate::{stats, Ctx};

/// How much worse than alone a figure may get under the mixed load.
const WORSE_BY: f64 = 1.2;

/// Requests a second of each writer: a busy editor, not a flood (unpaced, twenty writers made
/// some 2,600 job changes a second, each a `job` event to every SSE client).
const WRITES_PER_SEC: f64 = 10.0;

/// The figures measured alone, earlier in the run.
#[derive(Debug, Clone, Copy)]
pub struct Alone {
    /// Figure 3's ceiling, articles per second.
    pub ingest_ceiling: f64,
    /// Figure 4's p99, ms.
    pub marker_p99: f64,
    /// Figure 5's requests per second.
    pub read_rps: f64,
    /// Figure 5's p99, ms.
    pub read_p99: f64,
}

/// Runs figure 12 against the data-streams at `addr`.
pub async fn run(
    ctx: &Ctx,
    js: &jetstream::Context,
    addr: &str,
    plan: &Plan,
    alone: &Alone,
) -> anyhow::Result<()> {
    let sizes = &ctx.sizes;
    let report = &ctx.report;
    let sse = SseClients::open(addr, "/events", sizes.mixed_sse_clients, &[]).await?;
    let warmup = sizes.mixed_window / 5;
    let started = Instant::now();
    let measure_from = started + warmup;
    let end = measure_from + sizes.mixed_window;
    let offered = alone.ingest_ceiling / 2.0;

    let published = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn(publish_at(
        ctx.corpus.clone(),
        js.clone(),
        offered,
        sizes.latency_batch_articles,
        end,
        published.clone(),
    ));
    let stop_writers = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..sizes.mixed_writers)
        .map(|w| tokio::spawn(write_jobs(addr.to_owned(), w, stop_writers.clone())))
        .collect();
    let (path, page) = first_page(addr, plan, &[]).await?;
    let read = ReadSpec::ok(&path, page.body.len());
    let readers = http::load(addr, &read, sizes.mixed_readers, warmup, sizes.mixed_window);
    let measure = async {
        tokio::time::sleep_until(measure_from.into()).await;
        let mut metrics = Client::new(addr);
        let stored_0 = read_metric(&mut metrics, "newsflow_articles_stored_total").await?;
        let (published_0, events_0, at_0) = (
            published.load(Ordering::Relaxed),
            sse.events(),
            Instant::now(),
        );
        let samples = marker_samples(ctx, js, addr, "mixed-latency", usize::MAX, Some(end)).await?;
        tokio::time::sleep_until(end.into()).await;
        let stored_1 = read_metric(&mut metrics, "newsflow_articles_stored_total").await?;
        let seconds = at_0.elapsed().as_secs_f64();
        let published = published.load(Ordering::Relaxed) - published_0;
        anyhow::Ok((
            samples,
            (stored_1 - stored_0) / seconds,
            published as f64 / seconds,
            sse.events() - events_0,
        ))
    };
    let (reads, measured) = tokio::join!(readers, measure);
    stop_writers.store(true, Ordering::Relaxed);
    let (samples, stored_rate, published_rate, events) = measured?;
    let reads = reads?;
    publisher.await.context("the publisher panicked")??;
    let mut writes = Vec::new();
    let mut write_errors = Vec::new();
    for writer in writers {
        let (latencies, errors) = writer.await.context("a writer panicked")?;
        writes.extend(latencies);
        write_errors.extend(errors);
    }
    ensure!(
        sse.open_count() == sizes.mixed_sse_clients,
        "SSE clients were dropped under the mixed load"
    );
    drop(sse);
    let marker = stats::summarize(samples.latencies).context("no marker sample")?;
    let write_count = writes.len();
    let written = stats::summarize(writes).context("no write completed")?;

    report.row(
        12,
        Row::versus(
            &format!(
                "ingest: stored / published at half the ceiling ({:.0} art/s offered)",
                offered
            ),
            Unit::ArticlesPerSec,
            stored_rate,
            published_rate,
            1.0 / WORSE_BY,
        ),
    );
    report.row(
        12,
        Row::no_worse_than(
            "marker -> visible p99 (beside figure 4's)",
            Unit::Ms,
            marker.p99,
            alone.marker_p99,
            WORSE_BY,
        ),
    );
    report.row(
        12,
        Row::versus(
            &format!(
                "reads/s, {} readers (beside figure 5's)",
                sizes.mixed_readers
            ),
            Unit::RequestsPerSec,
            reads.rps,
            alone.read_rps,
            1.0 / WORSE_BY,
        ),
    );
    report.row(
        12,
        Row::no_worse_than(
            "read latency p99 (beside figure 5's)",
            Unit::Ms,
            reads.p99_ms,
            alone.read_p99,
            WORSE_BY,
        ),
    );
    report.row(
        12,
        Row::info(
            &format!(
                "writes/s (create, patch, delete), {} writers at {WRITES_PER_SEC} a second",
                sizes.mixed_writers
            ),
            Unit::RequestsPerSec,
            write_count as f64 / (sizes.mixed_window + warmup).as_secs_f64(),
        ),
    );
    report.row(12, Row::info("write latency p99", Unit::Ms, written.p99));
    report.plot(
        12,
        Plot {
            title: "latency distributions under the mixed load".to_owned(),
            x: Axis::Percentile,
            y: Unit::Ms,
            series: vec![
                Series::new("read", reads.distribution.clone()),
                Series::new("marker -> visible", marker.distribution.clone()),
                Series::new("write", written.distribution.clone()),
            ],
            limit: None,
        },
    );
    report.detail(
        12,
        "load",
        json!({
            "window_seconds": sizes.mixed_window.as_secs_f64(),
            "offered_articles_per_sec": offered,
            "published_articles_per_sec": published_rate,
            "stored_articles_per_sec": stored_rate,
            "readers": sizes.mixed_readers,
            "writers": sizes.mixed_writers,
            "sse_clients": sizes.mixed_sse_clients,
            "sse_events_received": events,
            "write_errors": write_errors.len(),
            "first_write_errors": write_errors.iter().take(5).collect::<Vec<_>>(),
            "reads": reads,
            "marker_ms": marker,
            "write_ms": written,
        }),
    );
    ensure!(
        write_errors.is_empty(),
        "{} writes failed under the mixed load, first: {}",
        write_errors.len(),
        write_errors[0]
    );
    ensure!(
        events > 0,
        "the SSE clients received no event under the mixed load"
    );
    Ok(())
}

/// Publishes batches of `articles` articles and their markers, cycling over ten jobs, at
/// `rate` articles per second until `end`; counts the articles acknowledged.
async fn publish_at(
    corpus: crate::articles::Corpus,
    js: jetstream::Context,
    rate: f64,
    articles: u32,
    end: Instant,
    published: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let jobs: Vec<JobId> = (0..10)
        .map(|i| JobId::parse(&format!("mixed-{i:02}")))
        .collect::<Result<_, _>>()?;
    let every = Duration::from_secs_f64(f64::from(articles) / rate.max(1.0));
    let mut due = Instant::now();
    let mut clock = BatchClock::default();
    for n in 0usize.. {
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        due += every;
        let job = &jobs[n % jobs.len()];
        let batch = clock.next(n as u128)?;
        publish_articles(&js, &corpus, job, batch, articles).await?;
        publish_marker(&js, job, batch, articles).await?;
        published.fetch_add(u64::from(articles), Ordering::Relaxed);
    }
    Ok(())
}

/// One writer: creates a job, patches it and deletes it, over and over until `stop`, at
/// [`WRITES_PER_SEC`] requests a second; each request's latency, and a line for each answer
/// that was not the contract's.
async fn write_jobs(addr: String, writer: usize, stop: Arc<AtomicBool>) -> (Vec<f64>, Vec<String>) {
    let mut client = Client::new(&addr);
    let (mut latencies, mut errors) = (Vec::new(), Vec::new());
    let every = Duration::from_secs_f64(1.0 / WRITES_PER_SEC);
    let mut due = Instant::now();
    for n in 0usize.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let id = format!("mw-{writer}-{n}");
        let path = format!("/jobs/{id}");
        let create = json!({"id": id, "params": {"q": "mixed"}, "interval_secs": 3600}).to_string();
        let steps: [(&str, &str, Option<&[u8]>, u16); 3] = [
            ("POST", "/jobs", Some(create.as_bytes()), 201),
            ("PATCH", &path, Some(br#"{"interval_secs":7200}"#), 200),
            ("DELETE", &path, None, 204),
        ];
        for (method, path, body, want) in steps {
            tokio::time::sleep_until(due.into()).await;
            due += every;
            let sent = Instant::now();
            match client.request(method, path, &[], body).await {
                Ok(response) if response.status == want => {
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                Ok(response) => errors.push(format!(
                    "{method} {path}: {} {}",
                    response.status,
                    String::from_utf8_lossy(&response.body)
                )),
                Err(error) => errors.push(format!("{method} {path}: {error:#}")),
            }
        }
    }
    (latencies, errors)
}
