//! The ingest phase: a backlog published to `NEWS`; the consume ceilings over it (figure 1,
//! and figure 3's ceiling: consume → sled batch → flush → ack); data-streams ingesting it
//! until visible (figure 3); marker → visible latency (figure 4); reads against an in-memory
//! ceiling (figure 5); data-streams' RSS and disk use (figure 8).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use async_nats::jetstream;
use newsflow_core::{BatchId, JobId};
use newsflow_nats::stream::{ensure_stream, StreamSettings};
use serde_json::json;

use crate::articles::{marker_message, Plan};
use crate::http::{self, Client, LoadResult, MemoryServer};
use crate::jetstream::{
    consume, open_sled, publish_message, publish_pipelined, Sink, PUBLISH_WINDOW,
};
use crate::procs::{disk_bytes, read_metric, rss_bytes, wait_ready, RssSampler};
use crate::report::{Row, Unit};
use crate::{stats, Ctx};

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

    let plan = Plan::new(
        "ingest",
        sizes.backlog_jobs,
        sizes.backlog_batches,
        sizes.batch_articles,
    )?;
    let (articles, messages) = (plan.article_count(), plan.message_count());
    eprintln!(
        "publishing a backlog of {articles} articles in {} batches",
        plan.order().len()
    );
    let corpus = &ctx.corpus;
    let published = publish_pipelined(
        &js,
        plan.order()
            .into_iter()
            .flat_map(|(job, batch)| corpus.batch(&job, batch, plan.articles)),
        PUBLISH_WINDOW,
    )
    .await?;
    ensure!(
        published.messages == messages && published.duplicates == 0,
        "the backlog publish stored {} messages ({} duplicates) of {messages}",
        published.messages,
        published.duplicates
    );
    report.detail(
        1,
        "backlog_publish_msgs_per_sec",
        published.messages as f64 / published.seconds,
    );

    let raw = consume(&client, &stream, "bench-raw", messages, Sink::Nothing).await?;
    report.row(
        1,
        Row::info(
            "raw durable pull consume + ack",
            Unit::MessagesPerSec,
            raw.messages as f64 / raw.seconds,
        ),
    );
    let _ = stream.delete_consumer("bench-raw").await;

    // Ceiling and service twice each, alternating, over the same backlog: a noisy moment
    // weighs on both sides. The second data-streams stays up for figures 4, 5 and 8.
    let mut ceiling_seconds = Vec::new();
    let mut service_seconds = Vec::new();
    let mut ceiling_disk = 0.0;
    let mut kept = None;
    for round in 0..2 {
        let sled_dir = ctx.dir.join(format!("ceiling-sled-{round}"));
        let (db, tree) = open_sled(&sled_dir)?;
        let durable = format!("bench-sled-{round}");
        let sled = consume(&client, &stream, &durable, messages, Sink::Sled(&db, &tree)).await?;
        db.flush().context("flushing the ceiling's sled")?;
        drop((tree, db));
        let _ = stream.delete_consumer(&durable).await;
        ceiling_seconds.push(sled.seconds);
        ceiling_disk = disk_bytes(&sled_dir) as f64 / articles as f64;
        let _ = std::fs::remove_dir_all(&sled_dir);

        // data-streams' durable consumer starts over from the stream's first message.
        let _ = stream.delete_consumer("data-streams").await;
        let data_dir = ctx.dir.join(format!("ds-ingest-{round}"));
        let run = ingest_once(ctx, &plan, &data_dir).await?;
        service_seconds.push(run.seconds);
        report.detail(
            3,
            &format!("round_{round}"),
            json!({
                "ceiling_groups": sled.groups,
                "ceiling_seconds": sled.seconds,
                "service": run.details,
            }),
        );
        if round == 0 {
            let mut ds = run.proc;
            let status = ds.terminate().await;
            ensure!(status.success(), "data-streams exited with {status}");
            let _ = std::fs::remove_dir_all(&data_dir);
        } else {
            kept = Some((run.proc, run.addr, run.rss_max, data_dir));
        }
    }
    let (mut ds, addr, rss_ingest, data_dir) = kept.context("no data-streams left running")?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    report.row(
        3,
        Row::versus(
            &format!("ingest of a {articles}-article backlog until visible"),
            Unit::ArticlesPerSec,
            articles as f64 / mean(&service_seconds),
            articles as f64 / mean(&ceiling_seconds),
            0.6,
        ),
    );

    tokio::time::sleep(sizes.settle).await;
    let rss_rest = rss_bytes(ds.pid()).context("reading data-streams' RSS")?;
    report.row(
        8,
        Row::info(
            &format!("data-streams RSS at rest, {articles} stored"),
            Unit::Bytes,
            rss_rest as f64,
        ),
    );
    report.row(
        8,
        Row::info(
            "data-streams RSS under ingest (max)",
            Unit::Bytes,
            rss_ingest as f64,
        ),
    );
    let disk = disk_bytes(&data_dir) as f64 / articles as f64;
    let payload = corpus_payload_bytes(ctx, &plan);
    report.row(
        8,
        Row::compared(
            "sled disk per stored article (ceiling: payload alone in sled)",
            Unit::Bytes,
            disk,
            ceiling_disk,
        ),
    );
    report.detail(8, "article_payload_bytes", payload);

    latency(ctx, &js, &addr).await?;
    read(ctx, &mut ds, &addr, &plan).await?;

    let stopping = Instant::now();
    let status = ds.terminate().await;
    report.detail(
        8,
        "data_streams_shutdown_ms",
        stopping.elapsed().as_secs_f64() * 1000.0,
    );
    ensure!(status.success(), "data-streams exited with {status}");
    Ok(())
}

/// One data-streams ingesting the whole backlog from a fresh store.
struct IngestRun {
    proc: newsflow_tests::Proc,
    addr: String,
    seconds: f64,
    rss_max: u64,
    details: serde_json::Value,
}

/// Starts data-streams on a fresh `data_dir` and times it from ready until the plan's last
/// batch is served; checks every message was stored and acknowledged.
async fn ingest_once(
    ctx: &Ctx,
    plan: &Plan,
    data_dir: &std::path::Path,
) -> anyhow::Result<IngestRun> {
    let (articles, messages) = (plan.article_count(), plan.message_count());
    let spawned = Instant::now();
    let (mut ds, addr) = ctx
        .bins
        .data_streams(&ctx.dir, "data-streams-ingest", &ctx.nats_url, data_dir)
        .await;
    let sampler = RssSampler::start(ds.pid());
    let ready = wait_ready(
        &mut ds,
        &addr,
        Duration::from_millis(10),
        Duration::from_secs(30),
    )
    .await?;
    let (last_job, last_batch) = plan.last().context("an empty plan")?;
    let visible = wait_visible(
        &addr,
        &last_job,
        last_batch,
        Duration::from_millis(20),
        Duration::from_secs(600),
    )
    .await?;
    let rss_max = sampler.stop().await;
    let seconds = visible.duration_since(ready).as_secs_f64();
    let mut metrics = Client::new(&addr);
    let stored = read_metric(&mut metrics, "newsflow_articles_stored_total").await?;
    // A batch is visible once applied and acknowledged once flushed, so the last group's acks
    // may still be on their way when it shows.
    let acks_due = Instant::now() + Duration::from_secs(30);
    let acked = loop {
        let acked = read_metric(&mut metrics, "newsflow_messages_acked_total").await?;
        if acked as u64 >= messages || Instant::now() > acks_due {
            break acked;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let groups = read_metric(&mut metrics, "newsflow_ingest_groups_total").await?;
    let flush_us = read_metric(&mut metrics, "newsflow_ingest_flush_microseconds_total").await?;
    ensure!(
        stored as u64 >= articles && acked as u64 >= messages,
        "data-streams stored {stored} of {articles} articles and acked {acked} of {messages} messages"
    );
    verify_every_job(&addr, plan).await?;
    Ok(IngestRun {
        proc: ds,
        addr,
        seconds,
        rss_max,
        details: json!({
            "seconds": seconds, "stored": stored, "acked": acked, "groups": groups,
            "mean_group": acked / groups.max(1.0),
            "flush_ms_total": flush_us / 1000.0,
            "spawn_to_ready_ms": ready.duration_since(spawned).as_secs_f64() * 1000.0,
        }),
    })
}

fn corpus_payload_bytes(ctx: &Ctx, plan: &Plan) -> f64 {
    let (job, batch) = (&plan.jobs[0], plan.batches[0][0]);
    let sizes: Vec<usize> = (0..100)
        .map(|seq| ctx.corpus.article_message(job, batch, seq).payload.len())
        .collect();
    sizes.iter().sum::<usize>() as f64 / sizes.len() as f64
}

/// Polls the job's latest batch every `every` until it is `batch`.
async fn wait_visible(
    addr: &str,
    job: &JobId,
    batch: BatchId,
    every: Duration,
    within: Duration,
) -> anyhow::Result<Instant> {
    let path = format!("/jobs/{job}/articles?limit=1");
    let needle = batch.to_string();
    let deadline = Instant::now() + within;
    let mut client = Client::new(addr);
    loop {
        if let Ok(response) = client.get(&path).await {
            if response.status == 200 && contains(&response.body, needle.as_bytes()) {
                return Ok(Instant::now());
            }
        }
        if Instant::now() > deadline {
            bail!("batch {batch} of {job} not visible within {within:?}");
        }
        tokio::time::sleep(every).await;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn verify_every_job(addr: &str, plan: &Plan) -> anyhow::Result<()> {
    let mut client = Client::new(addr);
    for (job, batches) in plan.jobs.iter().zip(&plan.batches) {
        let last = batches.last().context("a job without batches")?;
        let response = client.get(&format!("/jobs/{job}/articles?limit=1")).await?;
        ensure!(
            response.status == 200 && contains(&response.body, last.to_string().as_bytes()),
            "job {job}'s latest batch is not {last}: {}",
            String::from_utf8_lossy(&response.body)
        );
    }
    Ok(())
}

/// Figure 4: batches of a new job, each marker timed from its publish until data-streams
/// serves the batch.
async fn latency(ctx: &Ctx, js: &jetstream::Context, addr: &str) -> anyhow::Result<()> {
    let sizes = &ctx.sizes;
    let job = JobId::parse("latency")?;
    let path = format!("/jobs/{job}/articles?limit=1");
    let mut client = Client::new(addr);
    let mut samples = Vec::with_capacity(sizes.latency_samples);
    let mut last_ms = 0u64;
    let mut metrics = Client::new(addr);
    let groups_before = read_metric(&mut metrics, "newsflow_ingest_groups_total").await?;
    let flush_before =
        read_metric(&mut metrics, "newsflow_ingest_flush_microseconds_total").await?;
    for i in 0..sizes.latency_samples {
        let now_ms =
            u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
                .context("the clock is before 1970")?;
        last_ms = now_ms.max(last_ms + 1);
        let batch = BatchId::from_parts(last_ms, i as u128);
        let articles = (0..sizes.latency_batch_articles)
            .map(|seq| ctx.corpus.article_message(&job, batch, seq));
        publish_pipelined(js, articles, PUBLISH_WINDOW).await?;
        let marker = marker_message(&job, batch, sizes.latency_batch_articles);
        let needle = batch.to_string();
        let sent = Instant::now();
        js.send_publish(marker.subject.clone(), publish_message(&marker))
            .await
            .context("publishing a marker")?
            .await
            .context("awaiting a marker's ack")?;
        loop {
            let response = client.get(&path).await?;
            if response.status == 200 && contains(&response.body, needle.as_bytes()) {
                break;
            }
            if sent.elapsed() > Duration::from_secs(30) {
                bail!("batch {batch} not visible 30 s after its marker");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples.push(sent.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let groups = read_metric(&mut metrics, "newsflow_ingest_groups_total").await? - groups_before;
    let flush_us =
        read_metric(&mut metrics, "newsflow_ingest_flush_microseconds_total").await? - flush_before;
    let summary = stats::summarize(samples).context("no latency sample")?;
    // Where the time goes: each sample is at least two group commits (its articles, then
    // its marker), each ending in a flush.
    ctx.report.detail(
        4,
        "group_commits",
        json!({"groups": groups, "mean_flush_ms": flush_us / 1000.0 / groups.max(1.0)}),
    );
    ctx.report
        .row(4, Row::info("marker -> visible p50", Unit::Ms, summary.p50));
    ctx.report.row(
        4,
        Row::at_most("marker -> visible p99", Unit::Ms, summary.p99, 20.0),
    );
    ctx.report.detail(4, "latency_ms", summary);
    ctx.report
        .detail(4, "batch_articles", sizes.latency_batch_articles);
    Ok(())
}

/// The mean of one side's rounds.
fn mean_of(rounds: &[(&str, LoadResult)], side: &str) -> anyhow::Result<LoadResult> {
    let mine: Vec<&LoadResult> = rounds
        .iter()
        .filter(|(s, _)| *s == side)
        .map(|(_, r)| r)
        .collect();
    ensure!(!mine.is_empty(), "no {side} round");
    let n = mine.len() as f64;
    let mean = |f: fn(&LoadResult) -> f64| mine.iter().map(|r| f(r)).sum::<f64>() / n;
    Ok(LoadResult {
        requests: mine.iter().map(|r| r.requests).sum(),
        errors: mine.iter().map(|r| r.errors).sum(),
        rps: mean(|r| r.rps),
        p50_ms: mean(|r| r.p50_ms),
        p99_ms: mean(|r| r.p99_ms),
        max_ms: mine.iter().map(|r| r.max_ms).fold(0.0, f64::max),
    })
}

/// Figure 5: the latest batch's first page under load, against the same bytes served from
/// memory by an axum handler in the bench.
async fn read(
    ctx: &Ctx,
    ds: &mut newsflow_tests::Proc,
    addr: &str,
    plan: &Plan,
) -> anyhow::Result<()> {
    let sizes = &ctx.sizes;
    let path = format!("/jobs/{}/articles", plan.jobs[0]);
    let response = Client::new(addr).get(&path).await?;
    ensure!(
        response.status == 200,
        "GET {path} answered {}",
        response.status
    );
    let body: serde_json::Value = serde_json::from_slice(&response.body).context("the page")?;
    let count = body["articles"].as_array().map_or(0, Vec::len);
    ensure!(
        count == 100,
        "GET {path} returned {count} articles, not 100"
    );
    let warmup = sizes.read_duration / 5;
    let length = response.body.len();
    let memory = MemoryServer::start(&response)?;
    let sampler = RssSampler::start(ds.pid());
    // Two rounds each, alternating, so a noisy moment weighs on both sides; each side is
    // the mean of its rounds.
    let mut rounds = Vec::new();
    for _ in 0..2 {
        for (side, target) in [("service", addr), ("ceiling", memory.addr())] {
            let result = http::load(
                target,
                &path,
                sizes.read_connections,
                warmup,
                sizes.read_duration,
                length,
            )
            .await?;
            rounds.push((side, result));
        }
    }
    let rss_read = sampler.stop().await;
    drop(memory);
    let (service, ceiling) = (mean_of(&rounds, "service")?, mean_of(&rounds, "ceiling")?);
    let report = &ctx.report;
    report.row(
        5,
        Row::versus(
            &format!(
                "requests/s, 100 articles, {} connections",
                sizes.read_connections
            ),
            Unit::RequestsPerSec,
            service.rps,
            ceiling.rps,
            0.6,
        ),
    );
    report.row(
        5,
        Row::compared("latency p50", Unit::Ms, service.p50_ms, ceiling.p50_ms),
    );
    report.row(
        5,
        Row::at_most_beside("latency p99", Unit::Ms, service.p99_ms, ceiling.p99_ms, 5.0),
    );
    report.detail(
        5,
        "rounds",
        rounds
            .iter()
            .map(|(side, result)| json!({"side": side, "result": result}))
            .collect::<Vec<_>>(),
    );
    report.detail(5, "body_bytes", length);
    report.row(
        8,
        Row::info(
            "data-streams RSS under read load (max)",
            Unit::Bytes,
            rss_read as f64,
        ),
    );
    Ok(())
}
