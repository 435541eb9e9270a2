//! The restart phase (figure 7): a data-streams store filled with a million articles by the
//! service's own ingest code (the consumer's step function, without a broker), then timed
//! from process start to ready and to the first read; and that store's footprint (figure 8).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use data_streams::consumer::{step, Outcome, RawMessage};
use data_streams::metrics::Metrics;
use data_streams::store::{Ingest, Store};
use newsflow_nats::stream::ConsumerSettings;
use newsflow_nats::subjects;
use newsflow_tests::NatsServer;
use serde_json::json;

use crate::articles::{Corpus, Plan};
use crate::http::Client;
use crate::procs::{disk_bytes, rss_bytes, wait_for_line, wait_ready};
use crate::report::{Row, Unit};
use crate::Ctx;

/// Runs the phase.
pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let (report, sizes) = (&ctx.report, &ctx.sizes);
    let plan = Plan::new(
        "big",
        sizes.restart_jobs,
        sizes.restart_batches,
        sizes.restart_batch_articles,
    )?;
    let articles = plan.article_count();
    let data_dir = ctx.dir.join("ds-restart");
    eprintln!("filling a store with {articles} articles");
    let fill_seconds = {
        let (corpus, plan, dir) = (ctx.corpus.clone(), plan.clone(), data_dir.clone());
        tokio::task::spawn_blocking(move || fill(&dir, &corpus, &plan))
            .await
            .context("the fill panicked")??
    };
    report.detail(
        7,
        "fill",
        json!({"articles": articles, "seconds": fill_seconds}),
    );
    let disk = disk_bytes(&data_dir) as f64 / articles as f64;

    // Its own broker, so nothing is waiting to be ingested while it starts.
    let nats = NatsServer::start_in(&ctx.dir.join("nats-restart")).await;
    let (last_job, last_batch) = plan.last().context("an empty plan")?;
    let read_path = format!("/jobs/{last_job}/articles");
    let needle = last_batch.to_string();
    let mut timings = Vec::new();
    let mut rss_rest = 0;
    // The first start follows the writes of a million articles: sled replays its log since
    // the last open. The second follows a start with nothing written in between.
    for round in ["after ingest", "again"] {
        let spawned = Instant::now();
        let (mut ds, addr) = ctx
            .bins
            .data_streams(&ctx.dir, "data-streams-restart", &nats.url(), &data_dir)
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
        let mut client = Client::new(&addr);
        let response = client.get(&read_path).await?;
        let read = Instant::now();
        ensure!(
            response.status == 200
                && response
                    .body
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes()),
            "{round}: GET {read_path} answered {} without batch {needle}",
            response.status
        );
        let ready_ms = ready.duration_since(spawned).as_secs_f64() * 1000.0;
        let read_ms = read.duration_since(spawned).as_secs_f64() * 1000.0;
        eprintln!("start {round}: ready after {ready_ms:.0} ms, first read after {read_ms:.0} ms");
        // Store open (sled recovery) and ingest state until the address is printed; NATS,
        // stream and consumer after.
        let open_ms = listening.duration_since(spawned).as_secs_f64() * 1000.0;
        timings.push(json!({
            "round": round,
            "store_open_ms": open_ms,
            "ready_ms": ready_ms,
            "first_read_ms": read_ms,
        }));
        tokio::time::sleep(sizes.settle).await;
        rss_rest = rss_bytes(ds.pid()).context("reading data-streams' RSS")?;
        let status = ds.terminate().await;
        ensure!(status.success(), "data-streams exited with {status}");
        if round == "after ingest" {
            report.row(
                7,
                Row::at_most(
                    &format!("restart -> ready after ingesting {articles}"),
                    Unit::Ms,
                    ready_ms,
                    1000.0,
                ),
            );
            report.row(
                7,
                Row::at_most("restart -> first read", Unit::Ms, read_ms, 1000.0),
            );
        } else {
            report.row(
                7,
                Row::at_most(
                    "restart -> ready, nothing written since last start",
                    Unit::Ms,
                    ready_ms,
                    1000.0,
                ),
            );
        }
    }
    report.detail(7, "rounds", timings);
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
            &format!("sled disk per article, {articles}-article store"),
            Unit::Bytes,
            disk,
        ),
    );
    Ok(())
}

/// Writes `plan` into a data-streams store at `dir` with the service's step function, as if
/// consumed from the stream; returns the seconds it took.
fn fill(dir: &Path, corpus: &Corpus, plan: &Plan) -> anyhow::Result<f64> {
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
    drop(ingest);
    drop(store);
    Ok(started.elapsed().as_secs_f64())
}
