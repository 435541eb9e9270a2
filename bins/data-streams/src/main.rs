use std::process::ExitCode;

use clap::Parser as _;
use data_streams::{Cli, Config};
use newsflow_runtime::logging::{init_logging, stderr_line, use_format};
use newsflow_runtime::signals::shutdown_on_signals;

/// mimalloc rather than glibc's allocator: a read allocates some sixty times, and glibc's
/// malloc and free were a third of the instructions it took (`just bench --only profile`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    use_format(cli.log_format);
    let (config, addr, log_format) = match Config::from_cli(cli) {
        Ok(parsed) => parsed,
        Err(error) => {
            stderr_line(&format!("data-streams: {error:#}"));
            return ExitCode::from(2);
        }
    };
    init_logging(log_format);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%addr, %error, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    match data_streams::run(config, listener, shutdown_on_signals()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "data-streams failed");
            ExitCode::FAILURE
        }
    }
}
