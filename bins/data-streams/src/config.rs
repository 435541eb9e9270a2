//! Command-line flags (each also read from the environment) and the validated configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use newsflow_core::Secret;
use newsflow_nats::connect::{NatsArgs, NatsConfig};
use newsflow_nats::stream::StreamSettings;
use newsflow_runtime::logging::LogFormat;

use crate::control::ControlSettings;

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
    /// A worker not heard from for this long is gone and its jobs are reassigned (about three
    /// heartbeats).
    #[arg(long, env = "DS_WORKER_TIMEOUT_MS", default_value_t = 6000)]
    pub worker_timeout_ms: u64,
    /// How often running jobs are checked for a live owner.
    #[arg(long, env = "DS_RECONCILE_MS", default_value_t = 1000)]
    pub reconcile_ms: u64,
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
    /// Request body limit.
    pub max_body_bytes: usize,
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
        let config = Self {
            nats: NatsConfig::try_from(cli.nats)?,
            data_dir: cli.data_dir,
            api_token: cli.api_token,
            control: ControlSettings {
                worker_timeout: Duration::from_millis(cli.worker_timeout_ms),
                reconcile_every: Duration::from_millis(cli.reconcile_ms),
                command_timeout: Duration::from_millis(cli.command_timeout_ms),
            },
            rebuild: cli.rebuild,
            stream: StreamSettings {
                replicas: cli.stream_replicas,
                max_age: Duration::from_secs(cli.stream_max_age_secs),
                ..StreamSettings::default()
            },
            max_body_bytes: cli.max_body_bytes,
        };
        Ok((config, cli.http_addr, cli.log_format))
    }
}
