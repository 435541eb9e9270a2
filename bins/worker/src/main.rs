//! `worker`: parses flags, sets up logging and runs the worker until SIGINT or SIGTERM.
//! A configuration error is one line on stderr and exit status 2, before anything starts.

use std::process::ExitCode;

use newsflow_runtime::config::{parse_flags, refuse};
use newsflow_runtime::logging::{init_logging, stderr_line, use_format};
use newsflow_runtime::signals::shutdown_on_signals;
use worker::{Cli, Config};

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = match parse_flags("worker") {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let log_format = cli.log_format;
    use_format(log_format);
    let config = match Config::try_from(cli) {
        Ok(config) => config,
        Err(error) => return refuse("worker", error),
    };
    init_logging(log_format);
    match worker::run(config, shutdown_on_signals()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "worker failed");
            stderr_line(&format!("worker: {error:#}"));
            ExitCode::FAILURE
        }
    }
}
