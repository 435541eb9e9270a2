//! Command-line flags (each also read from the environment) and the validated configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use newsflow_core::Secret;
use newsflow_nats::connect::{NatsArgs, NatsConfig};
use newsflow_nats::stream::StreamSettings;
use newsflow_runtime::logging::LogFormat;

use crate::control::ControlSettings;
use crate::store::Retention;

/// data-streams: newsflow's HTTP API over a durable JetStream consumer and a sled store.
#[derive(Debug, clap::Parser)]
#[command(name = "data-streams", version, about)]
pub struct Cli {
    /// Address the HTTP API listens on (port 0 picks a free one).
    #[arg(long, env = "DS_HTTP_ADDR", default_value = "127.0.0.1:3000")]
    pub http_addr: SocketAddr,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Directory of the sled database.
    #[arg(long, env = "DS_DATA_DIR", default_value = "./data/data-streams")]
    pub data_dir: PathBuf,
    /// When set, every route but /healthz needs `Authorization: Bearer <token>`.
    #[arg(long, env = "DS_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<Secret>,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// A worker not heard from for this long is gone and its jobs are reassigned at once
    /// (two and a half of the workers' default 2 s heartbeats, so a killed worker's jobs run
    /// elsewhere within three heartbeat intervals).
    #[arg(long, env = "DS_WORKER_TIMEOUT_MS", default_value_t = 5000)]
    pub worker_timeout_ms: u64,
    /// How often running jobs are checked for a live owner.
    #[arg(long, env = "DS_RECONCILE_MS", default_value_t = 1000)]
    pub reconcile_ms: u64,
    /// Move running jobs from workers above the fair share to those below, a few per
    /// reconcile pass (stopped on the old worker first, started on the new one without adding
    /// a run to their schedule).
    #[arg(long, env = "DS_REBALANCE")]
    pub rebalance: bool,
    /// How long a start or stop command waits for the worker's ack.
    #[arg(long, env = "DS_COMMAND_TIMEOUT_MS", default_value_t = 2000)]
    pub command_timeout_ms: u64,
    /// Rebuild the store from the stream at start-up: forget everything derived from the
    /// stream (a corrupt store is moved aside) and consume the stream again from its start.
    #[arg(long, env = "DS_REBUILD")]
    pub rebuild: bool,
    /// Replicas of the NEWS stream (3 on a cluster).
    #[arg(long, env = "NEWS_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    /// How long the NEWS stream keeps messages.
    #[arg(long, env = "NEWS_STREAM_MAX_AGE_SECS", default_value_t = 7 * 24 * 3600)]
    pub stream_max_age_secs: u64,
    /// The largest request body accepted (413 above).
    #[arg(long, env = "DS_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// A store flush or call running longer than this is a stall: /readyz answers 503 and the
    /// process exits with status 3 so that a supervisor restarts it.
    #[arg(long, env = "DS_STORE_STALL_SECS", default_value_t = 30)]
    pub store_stall_secs: u64,
    /// Open HTTP connections at most; more wait to be accepted.
    #[arg(long, env = "DS_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Requests handled at once at most; beyond it, 503 `overloaded`.
    #[arg(long, env = "DS_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Open server-sent event streams at most; beyond it, 503 `too_many_streams`.
    #[arg(long, env = "DS_MAX_SSE_CLIENTS", default_value_t = 1000)]
    pub max_sse_clients: usize,
    /// A connection that has not sent a whole request head within this is closed; so is a
    /// keep-alive connection idle this long.
    #[arg(long, env = "DS_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// How many of its newest batches a job keeps when its spec does not say (1 to 1000); older
    /// batches and their articles are deleted (the latest complete one always stays).
    #[arg(long, env = "DS_KEEP_BATCHES", default_value_t = 20)]
    pub keep_batches: u64,
    /// A batch whose marker has not come this long after it started is abandoned: incomplete,
    /// its articles deleted. Default: three of its job's intervals, at least 10 minutes.
    #[arg(long, env = "DS_ABANDON_AFTER_SECS")]
    pub abandon_after_secs: Option<u64>,
    /// The name of this instance's durable consumer of the NEWS stream: every data-streams
    /// sharing a stream (read replicas) needs its own.
    #[arg(long, env = "DS_CONSUMER_NAME", default_value = "data-streams")]
    pub consumer_name: String,
    /// How long the control lease lives without renewal: a read replica takes control about
    /// this long after the controlling instance died (the holder renews every quarter of it).
    /// Only the first instance to create the bucket `newsflow_control` sets it.
    #[arg(long, env = "DS_LEASE_MS", default_value_t = 3000)]
    pub lease_ms: u64,
    /// This instance's id in the control lease; unique per instance. Default: generated once
    /// and kept in the data directory (`instance-id`), so a restarted instance is itself.
    #[arg(long, env = "DS_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// The URL of this instance's HTTP API that the control lease advertises (for operators:
    /// which instance controls). Default: `http://<--http-addr as bound>`.
    #[arg(long, env = "DS_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Test hook: every store flush is held while this file exists (shows the watchdog).
    #[arg(long, env = "DS_TEST_HOLD_FLUSHES_WHILE", hide = true)]
    pub test_hold_flushes_while: Option<PathBuf>,
}

/// What bounds the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Requests in flight at most.
    pub max_in_flight: usize,
    /// Time to send a request head; also the keep-alive idle limit.
    pub header_timeout: Duration,
    /// The largest request body.
    pub max_body_bytes: usize,
}

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// NATS connection, checked: every URL parsed, the credentials file read.
    pub nats: NatsConfig,
    /// The sled directory.
    pub data_dir: PathBuf,
    /// Bearer token, when required.
    pub api_token: Option<Secret>,
    /// Ownership timing.
    pub control: ControlSettings,
    /// Rebuild at start-up.
    pub rebuild: bool,
    /// The NEWS stream.
    pub stream: StreamSettings,
    /// HTTP server limits.
    pub http: HttpLimits,
    /// Open SSE streams at most.
    pub max_sse_clients: usize,
    /// A store call this old is a stall.
    pub store_stall: Duration,
    /// Test hook: flushes are held while this file exists.
    pub hold_flushes_while: Option<PathBuf>,
    /// What jobs keep, and when a markerless batch is abandoned.
    pub retention: Retention,
    /// The durable consumer's name.
    pub consumer_name: String,
    /// The control lease's life.
    pub lease_life: Duration,
    /// `--instance-id`, when given.
    pub instance_id: Option<String>,
    /// `--advertise-url`, when given.
    pub advertise_url: Option<String>,
}

impl Config {
    /// Checks the flags.
    pub fn from_cli(cli: Cli) -> anyhow::Result<(Self, SocketAddr, LogFormat)> {
        if cli
            .api_token
            .as_ref()
            .is_some_and(|t| t.expose().is_empty())
        {
            anyhow::bail!("--api-token (DS_API_TOKEN) is set but empty; unset it or give a token");
        }
        for (name, value) in [
            ("--worker-timeout-ms", cli.worker_timeout_ms),
            ("--reconcile-ms", cli.reconcile_ms),
            ("--command-timeout-ms", cli.command_timeout_ms),
            ("--store-stall-secs", cli.store_stall_secs),
            ("--header-timeout-ms", cli.header_timeout_ms),
            ("--max-connections", cli.max_connections as u64),
            ("--max-in-flight", cli.max_in_flight as u64),
            ("--max-sse-clients", cli.max_sse_clients as u64),
        ] {
            anyhow::ensure!(value > 0, "{name} must be at least 1");
        }
        anyhow::ensure!(
            cli.stream_replicas >= 1 && cli.stream_replicas <= 5,
            "--stream-replicas must be 1 to 5"
        );
        anyhow::ensure!(
            cli.stream_max_age_secs >= 60,
            "--stream-max-age-secs must be at least 60"
        );
        anyhow::ensure!(
            cli.max_body_bytes >= 1024,
            "--max-body-bytes must be at least 1024"
        );
        anyhow::ensure!(
            (1000..=60_000).contains(&cli.lease_ms),
            "--lease-ms must be 1000 to 60000"
        );
        anyhow::ensure!(
            !cli.consumer_name.is_empty()
                && cli.consumer_name.len() <= 64
                && cli
                    .consumer_name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)),
            "--consumer-name must be 1 to 64 letters, digits, '-' or '_'"
        );
        if let Some(id) = &cli.instance_id {
            anyhow::ensure!(
                !id.is_empty()
                    && id.len() <= 128
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                "--instance-id must be 1 to 128 letters, digits, '-', '_' or '.'"
            );
        }
        let default_keep = newsflow_core::KeepBatches::new(cli.keep_batches)
            .map_err(|_| anyhow::anyhow!("--keep-batches must be 1 to 1000"))?;
        anyhow::ensure!(
            cli.abandon_after_secs != Some(0),
            "--abandon-after-secs must be at least 1"
        );
        let config = Self {
            nats: NatsConfig::try_from(cli.nats)?,
            data_dir: cli.data_dir,
            api_token: cli.api_token,
            control: ControlSettings {
                worker_timeout: Duration::from_millis(cli.worker_timeout_ms),
                reconcile_every: Duration::from_millis(cli.reconcile_ms),
                command_timeout: Duration::from_millis(cli.command_timeout_ms),
                rebalance: cli.rebalance,
            },
            rebuild: cli.rebuild,
            stream: StreamSettings {
                replicas: cli.stream_replicas,
                max_age: Duration::from_secs(cli.stream_max_age_secs),
                ..StreamSettings::default()
            },
            http: HttpLimits {
                max_connections: cli.max_connections,
                max_in_flight: cli.max_in_flight,
                header_timeout: Duration::from_millis(cli.header_timeout_ms),
                max_body_bytes: cli.max_body_bytes,
            },
            max_sse_clients: cli.max_sse_clients,
            store_stall: Duration::from_secs(cli.store_stall_secs),
            hold_flushes_while: cli.test_hold_flushes_while,
            retention: Retention {
                default_keep,
                abandon_after: cli.abandon_after_secs.map(Duration::from_secs),
            },
            consumer_name: cli.consumer_name,
            lease_life: Duration::from_millis(cli.lease_ms),
            instance_id: cli.instance_id,
            advertise_url: cli.advertise_url,
        };
        Ok((config, cli.http_addr, cli.log_format))
    }
}
