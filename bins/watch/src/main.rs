//! `newsflow-watch`: parses flags, connects, prints messages until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser as _;
use newsflow_nats::service::shutdown_on_signals;
use newsflow_watch::{connect, Cli, WatchError};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let shutdown = shutdown_on_signals();
    let client = match connect::connect(&cli.nats, shutdown.cancelled()).await {
        Ok(Some(client)) => client,
        Ok(None) => return ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("newsflow-watch: {error}");
            return ExitCode::from(2);
        }
    };
    let stdout = std::io::stdout().lock();
    match newsflow_watch::run(&client, &cli.subject, stdout, shutdown.cancelled()).await {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`newsflow-watch | head`): nothing is left to print to.
        Err(WatchError::Write(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("newsflow-watch: {error}");
            ExitCode::FAILURE
        }
    }
}
