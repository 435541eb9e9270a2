//! `worker`: parses flags, sets up logging and runs the worker until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser as _;
use newsflow_nats::service::{init_logging, shutdown_on_signals};
use worker::{Cli, Config};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let config = match Config::try_from(cli) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "invalid configuration");
            eprintln!("worker: {error}");
            return ExitCode::from(2);
        }
    };
    match worker::run(config, shutdown_on_signals()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "worker failed");
            eprintln!("worker: {error:#}");
            ExitCode::FAILURE
        }
    }
}
