//! `newsapi-mock`: parses flags, sets up logging and runs the server until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use newsapi_mock::{Config, FaultSpec};
use newsflow_runtime::config::parse_flags;
use newsflow_runtime::logging::{init_logging, stderr_line, stdout_line, LogFormat};
use newsflow_runtime::signals::shutdown_on_signals;

/// A NewsAPI v2 compatible mock server with deterministic articles and injectable faults.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, env = "MOCK_ADDR", default_value = "127.0.0.1:8081")]
    addr: String,
    /// The API key the mock accepts.
    #[arg(
        long,
        env = "MOCK_API_KEY",
        default_value = "demo-key",
        hide_env_values = true
    )]
    api_key: String,
    /// Results of every query; by default 120..=400, derived from the query.
    #[arg(long, env = "MOCK_TOTAL_RESULTS")]
    total_results: Option<u32>,
    /// The plan's result cap: asking past it is a 426 `maximumResultsReached`.
    #[arg(long, env = "MOCK_MAX_RESULTS", default_value_t = 100)]
    max_results: u32,
    /// Milliseconds added to every /v2 response.
    #[arg(long, env = "MOCK_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// A fault to queue at start, `kind[:times]` (e.g. `rate_limited:3`); repeatable.
    #[arg(long = "fault", env = "MOCK_FAULTS", value_delimiter = ',')]
    faults: Vec<FaultSpec>,
    /// Seed of the generated articles.
    #[arg(long, env = "MOCK_SEED", default_value_t = 0)]
    seed: u64,
    /// Every this many seconds a new article tops every result list; 0 is never.
    #[arg(long, env = "MOCK_ROTATE_SECS", default_value_t = 0)]
    rotate_secs: u64,
    /// One result in this many is a `[Removed]` placeholder, and the next one has HTML
    /// entities in its title and description, as on real NewsAPI pages; 0 is clean pages.
    #[arg(long, env = "MOCK_DIRTY_EVERY", default_value_t = 0)]
    dirty_every: u32,
    /// Log line format; the level comes from RUST_LOG.
    #[arg(long, env = "MOCK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = match parse_flags("newsapi-mock") {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    init_logging(cli.log_format);
    match serve(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "newsapi-mock failed");
            stderr_line(&format!("newsapi-mock: {error:#}"));
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    // Before the listening line: a test may send SIGTERM as soon as it reads it.
    let shutdown = shutdown_on_signals();
    let listener = tokio::net::TcpListener::bind(&cli.addr)
        .await
        .with_context(|| format!("binding {}", cli.addr))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    stdout_line(&format!("newsapi-mock listening on http://{addr}"));

    let config = Config {
        api_key: Some(cli.api_key),
        total_results: cli.total_results,
        max_results: cli.max_results,
        faults: cli.faults,
        latency: Duration::from_millis(cli.latency_ms),
        seed: cli.seed,
        rotate_every: (cli.rotate_secs > 0).then(|| Duration::from_secs(cli.rotate_secs)),
        dirty_every: (cli.dirty_every > 0).then_some(cli.dirty_every),
    };
    newsapi_mock::run(config, listener, shutdown.cancelled_owned()).await
}
