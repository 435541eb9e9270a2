//! The restart phase (figure 7): a data-streams store filled stage by stage by the service's
//! own ingest code (the consumer's step function, without a broker), and after each stage a
//! timed start, from process start to ready and to the first read: restart time against the
//! articles written since the last start, as a curve. Then that store's footprint (figure 8).
//!
//! sled 0.34 writes its snapshot only when it opens a store, after replaying the log written
//! since the previous snapshot: a start replays everything written since the last start, so
//! that (not the store's size) is what the curve's x axis is.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use data_streams::consumer::{step, Outcome, RawMessage};
use data_streams::metrics::Metrics;
use data_streams::store::{Ingest, JobRecord, Store};
use newsflow_nats::kv::JOBS_BUCKET;
use newsflow_nats::stream::ConsumerSettings;
use newsflow_nats::subjects;
use newsflow_tests::NatsServer;
use serde_json::json;

use crate::articles::{Corpus, Plan};
use crate::http::Client;
use crate::procs::{disk_bytes, rss_bytes, wait_for_line, wait_ready};
use crate::report::{Axis, Plot, Row, Series, Unit};
use crate::Ctx;

/// One timed start.
struct Start {
    ready_ms: f64,
    read_ms: f64,
    open_ms: f64,
    rss: u64,
}

/// Runs the phase.
pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let (report, sizes) = (&ctx.report, &ctx.sizes);
    let data_dir = ctx.dir.join("ds-restart");
    // Its own broker, so nothing is waiting to be ingested while data-streams starts.
    let nats = NatsServer::start_in(&ctx.dir.join("nats-restart")).await;
    let js = async_nats::jetstream::new(
        async_nats::connect(nats.url())
            .await
            .context("connecting to NATS")?,
    );
    let mut total = 0u64;
    let mut curve = Vec::new();
    let mut last_read = None;
    let mut timings = Vec::new();
    for (stage, &jobs) in sizes.restart_stages.iter().enumerate() {
        let plan = Plan::new(
            &format!("big{stage}"),
            jobs,
            sizes.restart_batches,
            sizes.restart_batch_articles,
        )?;
        let written = plan.article_count();
        eprintln!("writing {written} articles into the store (stage {stage})");
        let (fill_seconds, jobs) = {
            let (corpus, plan, dir) = (ctx.corpus.clone(), plan.clone(), data_dir.clone());
            tokio::task::spawn_blocking(move || fill(&dir, &corpus, &plan))
                .await
                .context("the fill panicked")??
        };
        if stage > 0 {
            publish_jobs(&js, &jobs).await?;
        }
        total += written;
        let (last_job, last_batch) = plan.last().context("an empty plan")?;
        let read = (format!("/jobs/{last_job}/articles"), last_batch.to_string());
        let start = timed_start(ctx, &nats, &data_dir, &read).await?;
        eprintln!(
            "start after writing {written}: ready after {:.0} ms, first read after {:.0} ms",
            start.ready_ms, start.read_ms
        );
        timings.push(json!({
            "written_since_last_start": written, "stored": total, "fill_seconds": fill_seconds,
            "store_open_ms": start.open_ms, "ready_ms": start.ready_ms,
            "first_read_ms": start.read_ms,
        }));
        curve.push((written as f64, start.ready_ms, start.open_ms));
        let last_stage = stage + 1 == sizes.restart_stages.len();
        let name = format!("restart -> ready, {written} written since the last start");
        report.row(
            7,
            if last_stage {
                Row::at_most(&name, Unit::Ms, start.ready_ms, 1000.0)
            } else {
                Row::info(&name, Unit::Ms, start.ready_ms)
            },
        );
        if last_stage {
            report.row(
                7,
                Row::at_most("restart -> first read", Unit::Ms, start.read_ms, 1000.0),
            );
        }
        last_read = Some(read);
    }
    let read = last_read.context("no restart stage")?;
    let again = timed_start(ctx, &nats, &data_dir, &read).await?;
    timings.push(json!({
        "written_since_last_start": 0, "stored": total, "store_open_ms": again.open_ms,
        "ready_ms": again.ready_ms, "first_read_ms": again.read_ms,
    }));
    curve.insert(0, (0.0, again.ready_ms, again.open_ms));
    report.row(
        7,
        Row::at_most(
            &format!("restart -> ready, nothing written since ({total} stored)"),
            Unit::Ms,
            again.ready_ms,
            1000.0,
        ),
    );
    report.detail(7, "starts", timings);
    report.plot(
        7,
        Plot {
            title: "restart -> ready against articles written since the last start".to_owned(),
            x: Axis::Count,
            y: Unit::Ms,
            series: vec![
                Series::new(
                    "ready",
                    curve.iter().map(|&(x, ready, _)| (x, ready)).collect(),
                ),
                Series::new(
                    "store open (sled log replay)",
                    curve.iter().map(|&(x, _, open)| (x, open)).collect(),
                ),
            ],
            limit: Some(1000.0),
        },
    );
    report.row(
        8,
        Row::info(
            &format!("data-streams RSS at rest, {total} stored"),
            Unit::Bytes,
            again.rss as f64,
        ),
    );
    report.row(
        8,
        Row::info(
            &format!("sled disk per article, {total}-article store"),
            Unit::Bytes,
            disk_bytes(&data_dir) as f64 / total as f64,
        ),
    );
    Ok(())
}

/// Puts the records of the jobs a stage wrote into the `newsflow_jobs` bucket, as the
/// controlling data-streams does for every job change (a store holding jobs its bucket does
/// not would drop them on start). The first start made the bucket, seeding it with the first
/// stage's jobs.
async fn publish_jobs(
    js: &async_nats::jetstream::Context,
    jobs: &[JobRecord],
) -> anyhow::Result<()> {
    let bucket = js
        .get_key_value(JOBS_BUCKET)
        .await
        .context("opening the jobs bucket")?;
    for record in jobs {
        let value = serde_json::to_vec(record).context("encoding a job record")?;
        bucket
            .put(record.spec.id().as_str(), value.into())
            .await
            .context("putting a job record")?;
    }
    Ok(())
}

/// Starts data-streams on `data_dir`, times it to ready and to a read of `read.0` that
/// shows batch `read.1`, and stops it.
async fn timed_start(
    ctx: &Ctx,
    nats: &NatsServer,
    data_dir: &Path,
    read: &(String, String),
) -> anyhow::Result<Start> {
    let (read_path, needle) = read;
    let spawned = Instant::now();
    let (mut ds, addr) = ctx
        .bins
        .data_streams(&ctx.dir, "data-streams-restart", &nats.url(), data_dir)
        .await;
    let listening = wait_for_line(
        &mut ds,
        "data-streams listening on",
        Duration::from_millis(5),
        Duration::from_secs(300),
    )
    .await?;
    let ready = wait_ready(
        &mut ds,
        &addr,
        Duration::from_millis(5),
        Duration::from_secs(300),
    )
    .await?;
    let response = Client::new(&addr).get(read_path).await?;
    let read = Instant::now();
    ensure!(
        response.status == 200
            && response
                .body
                .windows(needle.len())
                .any(|w| w == needle.as_bytes()),
        "GET {read_path} answered {} without batch {needle}",
        response.status
    );
    tokio::time::sleep(ctx.sizes.settle).await;
    let rss = rss_bytes(ds.pid()).context("reading data-streams' RSS")?;
    let status = ds.terminate().await;
    ensure!(status.success(), "data-streams exited with {status}");
    let ms = |at: Instant| at.duration_since(spawned).as_secs_f64() * 1000.0;
    Ok(Start {
        ready_ms: ms(ready),
        read_ms: ms(read),
        // Store open (sled recovery) and ingest state until the address is printed; NATS,
        // stream and consumer after.
        open_ms: ms(listening),
        rss,
    })
}

/// Writes `plan` into a data-streams store at `dir` with the service's step function, as if
/// consumed from the stream; returns the seconds it took and the job records it made.
fn fill(dir: &Path, corpus: &Corpus, plan: &Plan) -> anyhow::Result<(f64, Vec<JobRecord>)> {
    let started = Instant::now();
    // Called on a blocking thread of the runtime: its handle may block on the flushes.
    let runtime = tokio::runtime::Handle::current();
    let store = Store::open(dir)?;
    let mut ingest = Ingest::new(store.clone())?;
    let metrics = Metrics::default();
    let settings = ConsumerSettings::default();
    let mut stream_seq = 0u64;
    for (n, (job, batch)) in plan.order().into_iter().enumerate() {
        for message in corpus.batch(&job, batch, plan.articles) {
            stream_seq += 1;
            let spec_header = message
                .headers
                .iter()
                .find(|(name, _)| *name == subjects::JOB_SPEC_HEADER)
                .map(|(_, value)| value.as_str());
            let raw = RawMessage {
                subject: &message.subject,
                spec_header,
                payload: &message.payload,
                stream_seq,
                delivered: 1,
            };
            let (outcome, _) = step(&mut ingest, &metrics, &raw, &settings);
            ensure!(outcome == Outcome::Ack, "{}: {outcome:?}", message.subject);
        }
        if n % 100 == 99 {
            runtime.block_on(store.flush())?;
        }
    }
    runtime.block_on(store.flush())?;
    let jobs: Vec<JobRecord> = store
        .all_jobs()?
        .into_iter()
        .filter(|record| plan.jobs.contains(record.spec.id()))
        .collect();
    drop(ingest);
    drop(store);
    Ok((started.elapsed().as_secs_f64(), jobs))
}
