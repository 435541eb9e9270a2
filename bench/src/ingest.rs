//! The ingest phase: a backlog published to `NEWS`; the consume ceilings over it (figure 1,
//! and figure 3's ceiling: consume → sled batch → flush → ack); data-streams ingesting it
//! until visible, with retention deleting old batches and SSE clients connected (figure 3);
//! marker → visible latency (figure 4); reads against an in-memory ceiling, plain, as 304s and
//! with a bearer token (figure 5); all of it at once (figure 12, [`crate::mixed`]);
//! data-streams' RSS and disk use (figure 8).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use async_nats::jetstream;
use newsflow_core::{BatchId, JobId};
use newsflow_nats::stream::{ensure_stream, StreamSettings};
use serde_json::json;

use crate::articles::{publish_articles, publish_marker, BatchClock, Plan};
use crate::http::{self, Client, LoadResult, MemoryServer, ReadSpec, SseClients};
use crate::jetstream::{consume, open_sled, publish_pipelined, Sink, PUBLISH_WINDOW};
use crate::procs::{disk_bytes, read_metric, rss_bytes, wait_ready, wait_ready_with, RssSampler};
use crate::report::{Axis, Plot, Row, Series, Unit};
use crate::{mixed, stats, Ctx};

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

    // Ceiling and service alternating over the same backlog, so a noisy moment weighs on
    // both sides; each side is the median of its rounds. The last data-streams stays up for
    // figures 4, 5, 8 and 12.
    let mut ceiling_seconds = Vec::new();
    let mut service_seconds = Vec::new();
    let mut ceiling_disk = 0.0;
    let mut kept = None;
    for round in 0..sizes.rounds {
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
        if round + 1 < sizes.rounds {
            let mut ds = run.proc;
            let status = ds.terminate().await;
            ensure!(status.success(), "data-streams exited with {status}");
            let _ = std::fs::remove_dir_all(&data_dir);
        } else {
            kept = Some((run.proc, run.addr, run.rss_max, data_dir));
        }
    }
    let (mut ds, addr, rss_ingest, data_dir) = kept.context("no data-streams left running")?;
    let median = |v: &[f64]| stats::median(v).unwrap_or(f64::NAN);
    let ceiling_rate = articles as f64 / median(&ceiling_seconds);
    report.row(
        3,
        Row::versus(
            &format!(
                "ingest of a {articles}-article backlog until visible, keeping {} batches a job, {} SSE clients",
                sizes.ingest_keep_batches, sizes.ingest_sse_clients
            ),
            Unit::ArticlesPerSec,
            articles as f64 / median(&service_seconds),
            ceiling_rate,
            0.85,
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

    let alone = {
        let sse = SseClients::open(&addr, "/events", sizes.ingest_sse_clients, &[]).await?;
        let marker_p99 = latency(ctx, &js, &addr).await?;
        ensure!(
            sse.open_count() == sizes.ingest_sse_clients,
            "SSE clients were dropped"
        );
        let reads = read(ctx, &mut ds, &addr, &plan).await?;
        mixed::Alone {
            ingest_ceiling: ceiling_rate,
            marker_p99,
            read_rps: reads.rps,
            read_p99: reads.p99_ms,
        }
    };
    // A mixed load the service cannot keep up with is a figure 12 result, not a reason to
    // leave the phase's other figures unmeasured.
    if let Err(error) = mixed::run(ctx, &js, &addr, &plan, &alone).await {
        eprintln!("figure 12 failed: {error:#}");
        report.error(12, &format!("{error:#}"));
    }

    let stopping = Instant::now();
    let status = ds.terminate().await;
    report.detail(
        8,
        "data_streams_shutdown_ms",
        stopping.elapsed().as_secs_f64() * 1000.0,
    );
    ensure!(status.success(), "data-streams exited with {status}");
    read_with_token(ctx, &data_dir, &plan).await
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
    let keep = ctx.sizes.ingest_keep_batches.to_string();
    let (mut ds, addr) = ctx
        .bins
        .data_streams_with(
            &ctx.dir,
            "data-streams-ingest",
            &ctx.nats_url,
            data_dir,
            &["--keep-batches", &keep],
        )
        .await;
    let sampler = RssSampler::start(ds.pid());
    let ready = wait_ready(
        &mut ds,
        &addr,
        Duration::from_millis(10),
        Duration::from_secs(30),
    )
    .await?;
    let sse = SseClients::open(&addr, "/events", ctx.sizes.ingest_sse_clients, &[]).await?;
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
    let sse_events = sse.events();
    ensure!(
        sse.open_count() == ctx.sizes.ingest_sse_clients,
        "SSE clients were dropped during ingest"
    );
    drop(sse);
    // A group is visible while it flushes and acknowledged after: the last acks may trail the
    // last batch becoming visible by one flush.
    let mut metrics = Client::new(&addr);
    let counted = Instant::now() + Duration::from_secs(30);
    let (stored, acked) = loop {
        let stored = read_metric(&mut metrics, "newsflow_articles_stored_total").await?;
        let acked = read_metric(&mut metrics, "newsflow_messages_acked_total").await?;
        let done = stored as u64 >= articles && acked as u64 >= messages;
        if done || Instant::now() >= counted {
            break (stored, acked);
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
            "sse_events_received": sse_events,
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
/// serves the batch; returns the p99.
async fn latency(ctx: &Ctx, js: &jetstream::Context, addr: &str) -> anyhow::Result<f64> {
    let samples = marker_samples(ctx, js, addr, "latency", ctx.sizes.latency_samples, None).await?;
    let summary = stats::summarize(samples.latencies).context("no latency sample")?;
    // Where the time goes: each sample is at least two group commits (its articles, then
    // its marker), each ending in a flush.
    ctx.report.detail(
        4,
        "group_commits",
        json!({"groups": samples.groups, "mean_flush_ms": samples.flush_ms / samples.groups.max(1.0)}),
    );
    ctx.report
        .row(4, Row::info("marker -> visible p50", Unit::Ms, summary.p50));
    ctx.report.row(
        4,
        Row::at_most("marker -> visible p99", Unit::Ms, summary.p99, 10.0),
    );
    ctx.report.plot(
        4,
        Plot {
            title: "marker -> visible latency distribution".to_owned(),
            x: Axis::Percentile,
            y: Unit::Ms,
            series: vec![Series::new(
                "marker -> visible",
                summary.distribution.clone(),
            )],
            limit: Some(10.0),
        },
    );
    ctx.report
        .detail(4, "batch_articles", ctx.sizes.latency_batch_articles);
    ctx.report.detail(4, "latency_ms", &summary);
    Ok(summary.p99)
}

/// What a run of marker samples found.
pub struct MarkerSamples {
    /// Marker → visible, ms, one per batch.
    pub latencies: Vec<f64>,
    /// Group commits meanwhile.
    pub groups: f64,
    /// Time spent flushing meanwhile, ms.
    pub flush_ms: f64,
}

/// Publishes `count` batches of job `job` one after the other (fewer when `until` comes
/// first), timing each marker from its publish until data-streams at `addr` serves the batch.
pub async fn marker_samples(
    ctx: &Ctx,
    js: &jetstream::Context,
    addr: &str,
    job: &str,
    count: usize,
    until: Option<Instant>,
) -> anyhow::Result<MarkerSamples> {
    let sizes = &ctx.sizes;
    let job = JobId::parse(job)?;
    let path = format!("/jobs/{job}/articles?limit=1");
    let mut client = Client::new(addr);
    let mut latencies = Vec::with_capacity(count.min(10_000));
    let mut clock = BatchClock::default();
    let mut metrics = Client::new(addr);
    let groups_before = read_metric(&mut metrics, "newsflow_ingest_groups_total").await?;
    let flush_before =
        read_metric(&mut metrics, "newsflow_ingest_flush_microseconds_total").await?;
    for i in 0..count {
        if until.is_some_and(|until| Instant::now() >= until) {
            break;
        }
        let batch = clock.next(i as u128)?;
        let articles = sizes.latency_batch_articles;
        publish_articles(js, &ctx.corpus, &job, batch, articles).await?;
        let needle = batch.to_string();
        let sent = Instant::now();
        publish_marker(js, &job, batch, articles).await?;
        loop {
            let response = client.get(&path).await?;
            if response.status == 200 && contains(&response.body, needle.as_bytes()) {
                break;
            }
            if sent.elapsed() > Duration::from_secs(30) {
                if until.is_none() {
                    bail!("batch {batch} not visible 30 s after its marker");
                }
                // Under a load it cannot keep up with, the figure is "30 s or more".
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let groups = read_metric(&mut metrics, "newsflow_ingest_groups_total").await? - groups_before;
    let flush_us =
        read_metric(&mut metrics, "newsflow_ingest_flush_microseconds_total").await? - flush_before;
    Ok(MarkerSamples {
        latencies,
        groups,
        flush_ms: flush_us / 1000.0,
    })
}

/// One side's rounds as one result: the median of each figure, and the distribution of the
/// round with the median throughput.
fn median_of(rounds: &[(&str, LoadResult)], side: &str) -> anyhow::Result<LoadResult> {
    let mut mine: Vec<&LoadResult> = rounds
        .iter()
        .filter(|(s, _)| *s == side)
        .map(|(_, r)| r)
        .collect();
    ensure!(!mine.is_empty(), "no {side} round");
    let median = |f: fn(&LoadResult) -> f64| {
        stats::median(&mine.iter().map(|r| f(r)).collect::<Vec<_>>()).unwrap_or(f64::NAN)
    };
    let (rps, p50_ms, p99_ms) = (
        median(|r| r.rps),
        median(|r| r.p50_ms),
        median(|r| r.p99_ms),
    );
    mine.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    let middle = mine[(mine.len() - 1) / 2];
    Ok(LoadResult {
        requests: mine.iter().map(|r| r.requests).sum(),
        errors: mine.iter().map(|r| r.errors).sum(),
        rps,
        p50_ms,
        p99_ms,
        max_ms: mine.iter().map(|r| r.max_ms).fold(0.0, f64::max),
        distribution: middle.distribution.clone(),
    })
}

/// Runs every `(side, address, request)` load once per round, in turn, so a noisy moment
/// weighs on every side; returns each side's rounds.
async fn alternate<'a>(
    ctx: &Ctx,
    sides: &[(&'a str, &str, &ReadSpec)],
) -> anyhow::Result<Vec<(&'a str, LoadResult)>> {
    let sizes = &ctx.sizes;
    let mut rounds = Vec::new();
    for _ in 0..sizes.rounds {
        for &(side, addr, spec) in sides {
            let result = http::load(
                addr,
                spec,
                sizes.read_connections,
                sizes.read_duration / 5,
                sizes.read_duration,
            )
            .await?;
            ensure!(
                result.errors == 0,
                "{side}: {} of its requests failed",
                result.errors
            );
            rounds.push((side, result));
        }
    }
    Ok(rounds)
}

/// The latest batch's first page (100 articles), checked; the path and the response.
pub(crate) async fn first_page(
    addr: &str,
    plan: &Plan,
    headers: &[(&str, &str)],
) -> anyhow::Result<(String, http::Response)> {
    let path = format!("/jobs/{}/articles", plan.jobs[0]);
    let response = Client::new(addr).get_with(&path, headers).await?;
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
    ensure!(response.etag.is_some(), "GET {path} had no ETag");
    Ok((path, response))
}

/// Figure 5: the latest batch's first page under load, and the same request answered 304
/// (`If-None-Match`), each against the same bytes served from memory by an axum handler in
/// the bench; returns the plain read's figures.
async fn read(
    ctx: &Ctx,
    ds: &mut newsflow_tests::Proc,
    addr: &str,
    plan: &Plan,
) -> anyhow::Result<LoadResult> {
    let sizes = &ctx.sizes;
    let (path, response) = first_page(addr, plan, &[]).await?;
    let etag = response.etag.clone().unwrap_or_default();
    let length = response.body.len();
    let memory = MemoryServer::start(&response)?;
    let plain = ReadSpec::ok(&path, length);
    let unchanged = plain
        .clone()
        .with_header("If-None-Match", &etag)
        .not_modified();
    let sampler = RssSampler::start(ds.pid());
    let rounds = alternate(
        ctx,
        &[
            ("service", addr, &plain),
            ("ceiling", memory.addr(), &plain),
            ("service 304", addr, &unchanged),
            ("ceiling 304", memory.addr(), &unchanged),
        ],
    )
    .await?;
    let rss_read = sampler.stop().await;
    drop(memory);
    let service = median_of(&rounds, "service")?;
    let ceiling = median_of(&rounds, "ceiling")?;
    let service_304 = median_of(&rounds, "service 304")?;
    let ceiling_304 = median_of(&rounds, "ceiling 304")?;
    let report = &ctx.report;
    let connections = sizes.read_connections;
    report.row(
        5,
        Row::versus(
            &format!("requests/s, 100 articles, {connections} connections"),
            Unit::RequestsPerSec,
            service.rps,
            ceiling.rps,
            0.85,
        ),
    );
    report.row(
        5,
        Row::compared("latency p50", Unit::Ms, service.p50_ms, ceiling.p50_ms),
    );
    report.row(
        5,
        Row::at_most_beside("latency p99", Unit::Ms, service.p99_ms, ceiling.p99_ms, 3.0),
    );
    report.row(
        5,
        Row::versus(
            &format!("304 Not Modified requests/s, {connections} connections"),
            Unit::RequestsPerSec,
            service_304.rps,
            ceiling_304.rps,
            0.9,
        ),
    );
    report.row(
        5,
        Row::compared(
            "304 latency p99",
            Unit::Ms,
            service_304.p99_ms,
            ceiling_304.p99_ms,
        ),
    );
    report.plot(
        5,
        Plot {
            title: format!("read latency distribution, {connections} connections"),
            x: Axis::Percentile,
            y: Unit::Ms,
            series: vec![
                Series::new("service 200", service.distribution.clone()),
                Series::new("ceiling 200", ceiling.distribution.clone()),
                Series::new("service 304", service_304.distribution.clone()),
                Series::new("ceiling 304", ceiling_304.distribution.clone()),
            ],
            limit: Some(3.0),
        },
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
    Ok(service)
}

/// Figure 5 with `--api-token` set: data-streams restarted on the same store with a token,
/// every read carrying it, against the same in-memory ceiling (which checks none).
async fn read_with_token(ctx: &Ctx, data_dir: &std::path::Path, plan: &Plan) -> anyhow::Result<()> {
    const TOKEN: &str = "bench-token-0123456789abcdef0123456789abcdef";
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let (mut ds, addr) = ctx
        .bins
        .data_streams_with(
            &ctx.dir,
            "data-streams-token",
            &ctx.nats_url,
            data_dir,
            &["--api-token", TOKEN],
        )
        .await;
    wait_ready_with(
        &mut ds,
        &addr,
        &auth,
        Duration::from_millis(10),
        Duration::from_secs(30),
    )
    .await?;
    let (path, response) = first_page(&addr, plan, &auth).await?;
    let memory = MemoryServer::start(&response)?;
    let plain = ReadSpec::ok(&path, response.body.len());
    let with_token = plain.clone().with_header("Authorization", &bearer);
    let rounds = alternate(
        ctx,
        &[
            ("service", addr.as_str(), &with_token),
            ("ceiling", memory.addr(), &plain),
        ],
    )
    .await?;
    drop(memory);
    let status = ds.terminate().await;
    ensure!(status.success(), "data-streams exited with {status}");
    let (service, ceiling) = (
        median_of(&rounds, "service")?,
        median_of(&rounds, "ceiling")?,
    );
    ctx.report.row(
        5,
        Row::versus(
            "requests/s with --api-token (ceiling without)",
            Unit::RequestsPerSec,
            service.rps,
            ceiling.rps,
            0.85,
        ),
    );
    ctx.report.row(
        5,
        Row::at_most_beside(
            "latency p99 with --api-token",
            Unit::Ms,
            service.p99_ms,
            ceiling.p99_ms,
            3.0,
        ),
    );
    ctx.report.detail(
        5,
        "token_rounds",
        rounds
            .iter()
            .map(|(side, result)| json!({"side": side, "result": result}))
            .collect::<Vec<_>>(),
    );
    Ok(())
}
