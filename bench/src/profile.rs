//! Figure 13, `--only profile`: instructions data-streams executes per article ingested and per
//! request read, counted by callgrind (valgrind) on the built data-streams. Counts, unlike
//! seconds, repeat on a busy machine: they say what a change to the code bought. Not part of
//! a default run (under callgrind a program runs some fifty times slower); the dumps are kept
//! in the scratch directory's `callgrind/` for `callgrind_annotate`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use async_nats::jetstream;
use newsflow_nats::stream::{ensure_stream, StreamSettings};
use newsflow_tests::{NatsServer, Proc, Spec};
use serde_json::json;

use crate::articles::Plan;
use crate::http::Client;
use crate::jetstream::{publish_pipelined, PUBLISH_WINDOW};
use crate::procs::{read_metric, wait_ready};
use crate::report::{Row, Unit};
use crate::Ctx;

/// Jobs, batches per job and articles per batch of the profiled ingest.
const INGEST: (usize, usize, u32) = (4, 5, 100);
/// Requests of each profiled read.
const READS: usize = 500;

/// Runs the phase.
pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let version = Command::new("valgrind")
        .arg("--version")
        .output()
        .context("running valgrind --version: install valgrind to profile")?;
    ensure!(version.status.success(), "valgrind --version failed");
    let out = ctx.dir.join("callgrind");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let nats = NatsServer::start_in(&ctx.dir.join("nats-profile")).await;
    let client = async_nats::connect(nats.url())
        .await
        .context("connecting to NATS")?;
    let js = jetstream::new(client);
    ensure_stream(&js, &StreamSettings::default())
        .await
        .context("provisioning NEWS")?;

    let addr = format!("127.0.0.1:{}", newsflow_tests::nats_server::free_port());
    let data_dir = ctx.dir.join("ds-profile");
    let spec = Spec::new("data-streams-profile", "valgrind", &ctx.dir)
        .env("RUST_LOG", "warn")
        .args([
            "--tool=callgrind".to_owned(),
            "--instr-atstart=no".to_owned(),
            // Valgrind runs one thread at a time: without fair scheduling, a thread spinning
            // on sled's lazy statics burns its slice (and billions of counted instructions)
            // waiting for a thread that is not running.
            "--fair-sched=yes".to_owned(),
            format!("--callgrind-out-file={}/ds.%p", out.display()),
        ])
        .args([ctx.bins.dir().join("data-streams").into_os_string()])
        .args(["--http-addr", &addr, "--nats-url", &nats.url()])
        .args(["--data-dir".into(), data_dir.into_os_string()])
        // Everything runs some fifty times slower: a flush is not a stall, and the control
        // lease must not lapse between renewals.
        .args(["--store-stall-secs", "3600", "--lease-ms", "60000"]);
    let mut ds = Proc::spawn(spec).await;
    wait_ready(
        &mut ds,
        &addr,
        Duration::from_millis(100),
        Duration::from_secs(300),
    )
    .await?;
    let pid = ds.pid();

    let (jobs, batches, per_batch) = INGEST;
    let plan = Plan::new("profile", jobs, batches, per_batch)?;
    let (articles, messages) = (plan.article_count(), plan.message_count());
    control(pid, &["--instr=on"])?;
    publish_pipelined(
        &js,
        plan.order()
            .into_iter()
            .flat_map(|(job, batch)| ctx.corpus.batch(&job, batch, plan.articles)),
        PUBLISH_WINDOW,
    )
    .await?;
    let mut metrics = Client::new(&addr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while (read_metric(&mut metrics, "newsflow_messages_acked_total").await? as u64) < messages {
        if tokio::time::Instant::now() > deadline {
            bail!("data-streams under callgrind did not acknowledge {messages} messages in time");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ingest = dump(pid, &out, "ingest")?;

    let (job, _) = plan.last().context("an empty plan")?;
    let path = format!("/jobs/{job}/articles");
    let mut reader = Client::new(&addr);
    let first = reader.get(&path).await?;
    ensure!(first.status == 200, "GET {path} answered {}", first.status);
    let etag = first.etag.clone().context("the page has no ETag")?;
    control(pid, &["--zero"])?;
    for _ in 0..READS {
        let response = reader.get(&path).await?;
        ensure!(response.status == 200, "GET {path}: {}", response.status);
    }
    let reads = dump(pid, &out, "reads")?;
    for _ in 0..READS {
        let response = reader
            .get_with(&path, &[("If-None-Match", etag.as_str())])
            .await?;
        ensure!(
            response.status == 304,
            "GET {path} (304): {}",
            response.status
        );
    }
    let not_modified = dump(pid, &out, "reads-304")?;
    let status = ds.terminate().await;
    ensure!(status.success(), "data-streams exited with {status}");

    let report = &ctx.report;
    let per = |total: u64, n: u64| total as f64 / n as f64;
    report.row(
        13,
        Row::info(
            "instructions per article ingested (articles, markers, flushes, acks)",
            Unit::Instructions,
            per(ingest, articles),
        ),
    );
    report.row(
        13,
        Row::info(
            "instructions per GET of a 100-article page",
            Unit::Instructions,
            per(reads, READS as u64),
        ),
    );
    report.row(
        13,
        Row::info(
            "instructions per 304 Not Modified",
            Unit::Instructions,
            per(not_modified, READS as u64),
        ),
    );
    report.detail(
        13,
        "counts",
        json!({
            "ingest_instructions": ingest, "articles": articles, "messages": messages,
            "read_instructions": reads, "not_modified_instructions": not_modified,
            "requests": READS, "body_bytes": first.body.len(),
            "dumps": out.display().to_string(),
            "valgrind": String::from_utf8_lossy(&version.stdout).trim(),
        }),
    );
    Ok(())
}

/// `callgrind_control` on `pid` with `args`.
fn control(pid: u32, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .context("running callgrind_control")?;
    ensure!(status.success(), "callgrind_control {args:?} failed");
    Ok(())
}

/// Dumps the counts since the last dump or zeroing as part `name`; returns its instructions.
fn dump(pid: u32, out: &Path, name: &str) -> anyhow::Result<u64> {
    let before = dumps(out)?;
    control(pid, &[&format!("--dump={name}")])?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = dumps(out)?;
        if let Some(file) = now.iter().find(|f| !before.contains(f)) {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            if let Some(total) = text
                .lines()
                .find_map(|line| line.strip_prefix("totals:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
            {
                return Ok(total);
            }
        }
        if std::time::Instant::now() > deadline {
            bail!("callgrind wrote no dump for {name}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The dump files in `out`.
fn dumps(out: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    Ok(std::fs::read_dir(out)
        .with_context(|| format!("listing {}", out.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .collect())
}
