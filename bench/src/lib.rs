//! newsflow's benchmark. One command builds nothing, starts its own `nats-server`, mock and
//! services from the built binaries, measures every figure of the issue beside a ceiling
//! measured in the same run on the same machine, prints a table and writes JSON lines.
//! Ratios are what count: the machine is small and noisy.
//!
//! # Layout
//! - [`cli`]: flags, phases, and the sizes of a full and of a quick run.
//! - [`svg`]: the run as a picture, `report.svg` beside the JSON lines.
//! - [`report`]: figures, rows, the table, JSON lines, machine information.
//! - [`stats`]: nearest-rank percentiles of latency samples.
//! - [`http`]: a minimal keep-alive HTTP/1.1 client, the read load, the in-memory ceiling.
//! - [`procs`]: the programs under test: starting them, readiness, metrics, RSS, disk use.
//! - [`articles`]: realistic article messages, batches and plans of many jobs' batches.
//! - [`jetstream`]: the raw ceilings: pipelined publish, pull consume + ack, consume → sled.
//! - [`ingest`]: figures 3, 4, 5 and data-streams' footprint (and figure 1's consume ceiling).
//! - [`publish`]: figure 2 and the worker's footprint (and figure 1's publish ceiling).
//! - [`scale`]: figure 6.
//! - [`restart`]: figure 7 and the big store's footprint.
//! - [`control`]: figures 9 and 10: the reconcile pass at 100,000 jobs, job-move time.
//! - [`cluster`]: figure 11: failover on a 3-node cluster.
//! - [`mixed`]: figure 12: ingest, readers, writers and SSE clients at once.
//! - [`profile`]: figure 13 (`--only profile`): instructions per article and per request.

pub mod articles;
pub mod cli;
pub mod cluster;
pub mod control;
pub mod http;
pub mod ingest;
pub mod jetstream;
pub mod mixed;
pub mod procs;
pub mod profile;
pub mod publish;
pub mod report;
pub mod restart;
pub mod scale;
pub mod stats;
pub mod svg;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use newsflow_tests::NatsServer;

pub use cli::{Cli, Phase, Sizes};

use crate::articles::Corpus;
use crate::procs::Bins;
use crate::report::{Machine, Report};

/// What every phase gets.
pub struct Ctx {
    /// The programs.
    pub bins: Bins,
    /// The scratch directory: stores and logs.
    pub dir: PathBuf,
    /// How big things are.
    pub sizes: Sizes,
    /// Where figures go.
    pub report: Report,
    /// The run's nats-server.
    pub nats_url: String,
    /// The run's mock, serving 1,000 results per query (ten pages of 100).
    pub mock_addr: String,
    /// Article templates from the mock.
    pub corpus: Corpus,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Outcome {
    /// The table printed.
    pub table: String,
    /// Where the JSON lines went.
    pub out: PathBuf,
    /// Whether every figure that ran was measured (targets aside).
    pub measured: bool,
}

/// Runs the benchmark.
pub async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let sizes = if cli.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let bins = Bins::locate(cli.bin_dir.clone())?;
    let out = cli.out.clone().unwrap_or_else(|| {
        bins.dir()
            .parent()
            .unwrap_or(bins.dir())
            .join("bench")
            .join("results.jsonl")
    });
    let machine = Machine::probe(&newsflow_tests::nats_server::nats_server_bin(), cli.quick);
    let dir = std::env::temp_dir().join(format!("newsflow-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!(
        "newsflow-bench: programs from {}, scratch in {}",
        bins.dir().display(),
        dir.display()
    );

    let report = Report::default();
    let phases: Vec<Phase> = if cli.only.is_empty() {
        Phase::ALL.to_vec()
    } else {
        cli.only.clone()
    };
    let nats = NatsServer::start_in(&dir.join("nats")).await;
    let (mock, mock_addr) = bins
        .mock(
            &dir,
            "mock",
            &["--max-results", "1000", "--total-results", "1000"],
        )
        .await;
    let corpus = Corpus::fetch(&mock_addr).await?;
    let ctx = Arc::new(Ctx {
        bins,
        dir: dir.clone(),
        sizes,
        report: report.clone(),
        nats_url: nats.url(),
        mock_addr,
        corpus,
    });
    let mut measured = true;
    let mut ran = BTreeSet::new();
    let selected: Vec<Phase> = Phase::ALL
        .into_iter()
        .chain([Phase::Profile])
        .filter(|p| phases.contains(p))
        .collect();
    // A quick run only checks that every figure can still be measured: the phases that mostly
    // wait on timeouts, each on brokers of its own, run beside the others to keep it short.
    let (beside, in_turn): (Vec<Phase>, Vec<Phase>) = selected
        .into_iter()
        .partition(|p| cli.quick && p.runs_beside_others());
    let beside: Vec<_> = beside
        .into_iter()
        .map(|phase| (phase, tokio::spawn(run_phase(ctx.clone(), phase))))
        .collect();
    let mut outcomes = Vec::new();
    for phase in in_turn {
        outcomes.push((phase, run_phase(ctx.clone(), phase).await));
    }
    for (phase, task) in beside {
        let outcome = task.await.unwrap_or_else(|error| Err(panic_message(error)));
        outcomes.push((phase, outcome));
    }
    for (phase, outcome) in outcomes {
        ran.extend(phase.figures().iter().copied());
        if let Err(failure) = outcome {
            measured = false;
            let short = failure.lines().next().unwrap_or("").to_owned();
            for &figure in phase.figures() {
                report.error(figure, &format!("{phase:?} phase failed: {short}"));
            }
        }
    }
    // A figure can fail on its own (figure 12) without failing its phase.
    measured &= report.figures().iter().all(|figure| figure.error.is_none());
    for (figure, _) in report::FIGURES {
        if !ran.contains(&figure) {
            report.skip(figure);
        }
    }
    drop(mock);
    drop(nats);
    let elapsed = started.elapsed().as_secs_f64();
    let table = report.table(&machine, elapsed);
    report.write_json_lines(&out, &machine, elapsed)?;
    let picture = out.with_file_name("report.svg");
    std::fs::write(&picture, svg::render(&report.figures(), &machine, elapsed))
        .with_context(|| format!("writing {}", picture.display()))?;
    if cli.keep || !measured {
        eprintln!("stores and logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(Outcome {
        table,
        out,
        measured,
    })
}

/// Runs one phase, timing it; a failure or a panic is its message.
async fn run_phase(ctx: Arc<Ctx>, phase: Phase) -> Result<(), String> {
    eprintln!("== {phase:?} (figures {:?})", phase.figures());
    let started = Instant::now();
    let task = tokio::spawn(async move {
        match phase {
            Phase::Ingest => ingest::run(&ctx).await,
            Phase::Publish => publish::run(&ctx).await,
            Phase::Scale => scale::run(&ctx).await,
            Phase::Restart => restart::run(&ctx).await,
            Phase::Control => control::run(&ctx).await,
            Phase::Cluster => cluster::run(&ctx).await,
            Phase::Profile => profile::run(&ctx).await,
        }
    });
    let outcome = match task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("{error:#}")),
        Err(error) => Err(panic_message(error)),
    };
    if let Err(failure) = &outcome {
        eprintln!("{phase:?} failed: {failure}");
    }
    eprintln!("== {phase:?} took {:.1} s", started.elapsed().as_secs_f64());
    outcome
}

fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic".to_owned()),
        Err(error) => error.to_string(),
    }
}
