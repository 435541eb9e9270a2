//! Flags, and the sizes of a full run and of a quick one.

use std::path::PathBuf;
use std::time::Duration;

/// A part of the run, each with its own processes (run a subset with `--only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// Figures 1 (consume), 3, 4, 5, 12 and data-streams' footprint: a backlog through
    /// data-streams, then reads, then all of it at once.
    Ingest,
    /// Figures 1 (publish), 2 and the worker's footprint: the worker publishing the mock's pages.
    Publish,
    /// Figure 6: thousands of jobs on one worker.
    Scale,
    /// Figure 7 and the big store's footprint: data-streams restarting on a large store.
    Restart,
    /// Figures 9 and 10: the reconcile pass at 100,000 jobs, and job-move time.
    Control,
    /// Figure 11: failover on a 3-node nats-server cluster when the stream's leader is killed.
    Cluster,
    /// Figure 13: instructions per article and per request, counted by callgrind; only with
    /// `--only profile` (valgrind needed, and slow).
    Profile,
}

impl Phase {
    /// Every phase a run goes through, in order ([`Phase::Profile`] only when asked for).
    pub const ALL: [Phase; 6] = [
        Phase::Ingest,
        Phase::Publish,
        Phase::Scale,
        Phase::Restart,
        Phase::Control,
        Phase::Cluster,
    ];

    /// Whether a quick run runs it beside the others: it mostly waits on timeouts, on brokers
    /// of its own.
    pub fn runs_beside_others(self) -> bool {
        matches!(self, Phase::Control | Phase::Cluster)
    }

    /// The figures this phase measures (figure 8 gathers rows from several phases).
    pub fn figures(self) -> &'static [u8] {
        match self {
            Phase::Ingest => &[1, 3, 4, 5, 8, 12],
            Phase::Publish => &[1, 2, 8],
            Phase::Scale => &[6],
            Phase::Restart => &[7, 8],
            Phase::Control => &[9, 10],
            Phase::Cluster => &[11],
            Phase::Profile => &[13],
        }
    }
}

/// newsflow's benchmark: builds nothing, starts its own nats-server and services from the built
/// binaries, and prints every figure beside a ceiling measured in the same run.
#[derive(Debug, clap::Parser)]
#[command(name = "newsflow-bench", version, about)]
pub struct Cli {
    /// A small run (well under a minute) that checks every figure can still be measured.
    #[arg(long)]
    pub quick: bool,
    /// Where the JSON lines go (default: `<target dir>/bench/results.jsonl`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Directory holding `data-streams`, `worker` and `newsapi-mock` (default: the directory of
    /// this program, so a release bench runs release services).
    #[arg(long, env = "NEWSFLOW_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Run only these phases (comma-separated); the others' figures are reported as skipped.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Phase>,
    /// Keep the scratch directory (stores and every process's logs) after the run.
    #[arg(long)]
    pub keep: bool,
}

/// How big each part of a run is.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Rounds of each ratio (ceiling and service alternating); the figure is their median.
    pub rounds: usize,
    /// Jobs of the ingest backlog.
    pub backlog_jobs: usize,
    /// Batches per job of the ingest backlog.
    pub backlog_batches: usize,
    /// Articles per batch (of the backlog and of the big store).
    pub batch_articles: u32,
    /// `--keep-batches` of the ingesting data-streams: below `backlog_batches`, so retention
    /// deletes old batches while it ingests.
    pub ingest_keep_batches: usize,
    /// SSE clients connected to `GET /events` while data-streams ingests and answers figure 4.
    pub ingest_sse_clients: usize,
    /// Messages of the raw publish ceiling.
    pub publish_ceiling_messages: usize,
    /// Jobs the worker runs for figure 2, each a 10-page batch of 1,000 articles every second:
    /// more than the worker can publish, so the figure is its capacity, not the schedule's.
    pub publish_jobs: usize,
    /// Worker publishing before figure 2's window opens.
    pub publish_warmup: Duration,
    /// Figure 2's measuring window.
    pub publish_window: Duration,
    /// Marker → visible samples.
    pub latency_samples: usize,
    /// Articles in each latency sample's batch.
    pub latency_batch_articles: u32,
    /// Length of each read load.
    pub read_duration: Duration,
    /// Connections of the read load.
    pub read_connections: usize,
    /// Jobs on one worker for figure 6, one fresh worker per size.
    pub scale_jobs: Vec<usize>,
    /// Runs that come due per second among them: each size's interval is its jobs divided by
    /// this, and their first runs are spread over one interval, so the trickle is steady.
    pub scale_due_per_sec: u64,
    /// How long lateness is measured, once every job is started.
    pub scale_window: Duration,
    /// The restart curve: jobs written (each `restart_batches` batches of
    /// `restart_batch_articles`) before each timed start, on top of what the previous stages
    /// wrote; the last stage is the figure's target.
    pub restart_stages: Vec<usize>,
    /// Batches per job of the big store.
    pub restart_batches: usize,
    /// Articles per batch of the big store: one page, as a job with the default
    /// `max_pages` fetches, so the store holds as many batches as real use would.
    pub restart_batch_articles: u32,
    /// Idle time before a process's RSS counts as "at rest".
    pub settle: Duration,
    /// Jobs of the store the reconcile pass is timed over.
    pub control_jobs: usize,
    /// Jobs running on three workers when one is killed.
    pub move_jobs: usize,
    /// Their interval.
    pub move_interval_secs: u64,
    /// Kills of the cluster's stream leader for figure 11.
    pub cluster_rounds: usize,
    /// Figure 12's window.
    pub mixed_window: Duration,
    /// Figure 12's readers (connections reading back to back).
    pub mixed_readers: usize,
    /// Figure 12's writers (each creating, patching and deleting jobs back to back).
    pub mixed_writers: usize,
    /// Figure 12's SSE clients.
    pub mixed_sse_clients: usize,
}

impl Sizes {
    /// The full run: every size the issue asks for, in well under ten minutes.
    pub fn full() -> Self {
        Self {
            rounds: 3,
            backlog_jobs: 20,
            backlog_batches: 10,
            ingest_keep_batches: 5,
            ingest_sse_clients: 10,
            batch_articles: 1000,
            publish_ceiling_messages: 200_000,
            publish_jobs: 64,
            publish_warmup: Duration::from_secs(3),
            publish_window: Duration::from_secs(15),
            latency_samples: 500,
            latency_batch_articles: 100,
            read_duration: Duration::from_secs(5),
            read_connections: 8,
            scale_jobs: vec![10_000, 100_000],
            scale_due_per_sec: 50,
            scale_window: Duration::from_secs(20),
            restart_stages: vec![100, 300, 1000],
            restart_batches: 10,
            restart_batch_articles: 100,
            settle: Duration::from_secs(2),
            control_jobs: 100_000,
            move_jobs: 30,
            move_interval_secs: 10,
            cluster_rounds: 3,
            mixed_window: Duration::from_secs(10),
            mixed_readers: 8,
            mixed_writers: 20,
            mixed_sse_clients: 100,
        }
    }

    /// The quick run: small enough for a test.
    pub fn quick() -> Self {
        Self {
            rounds: 1,
            backlog_jobs: 5,
            backlog_batches: 2,
            ingest_keep_batches: 1,
            ingest_sse_clients: 4,
            batch_articles: 1000,
            publish_ceiling_messages: 10_000,
            publish_jobs: 32,
            publish_warmup: Duration::from_secs(1),
            publish_window: Duration::from_secs(3),
            latency_samples: 30,
            latency_batch_articles: 100,
            read_duration: Duration::from_secs(1),
            read_connections: 8,
            scale_jobs: vec![2000],
            scale_due_per_sec: 50,
            scale_window: Duration::from_secs(4),
            restart_stages: vec![20, 80],
            restart_batches: 2,
            restart_batch_articles: 100,
            settle: Duration::from_millis(500),
            control_jobs: 5_000,
            move_jobs: 6,
            move_interval_secs: 5,
            cluster_rounds: 1,
            mixed_window: Duration::from_secs(2),
            mixed_readers: 8,
            mixed_writers: 20,
            mixed_sse_clients: 20,
        }
    }

    /// Articles of the ingest backlog.
    pub fn backlog_articles(&self) -> u64 {
        (self.backlog_jobs * self.backlog_batches) as u64 * u64::from(self.batch_articles)
    }

    /// Articles written by a restart stage of `jobs` jobs.
    pub fn restart_articles(&self, jobs: usize) -> u64 {
        (jobs * self.restart_batches) as u64 * u64::from(self.restart_batch_articles)
    }
}
