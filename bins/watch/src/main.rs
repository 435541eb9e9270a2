//! `newsflow-watch`: parses flags, connects, prints messages until SIGINT or SIGTERM.

use std::process::ExitCode;

use newsflow_nats::connect::NatsConfig;
use newsflow_runtime::config::{parse_flags, refuse};
use newsflow_runtime::signals::shutdown_on_signals;
use newsflow_watch::{connect, Cli, WatchError};

const PROGRAM: &str = "newsflow-watch";

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = match parse_flags(PROGRAM) {
        Ok(cli) => cli,
        Err(status) => return status,
    };
    let config = match NatsConfig::try_from(cli.nats) {
        Ok(config) => config,
        Err(error) => return refuse(PROGRAM, error),
    };
    let shutdown = shutdown_on_signals();
    let Some(client) = connect::connect(&config, shutdown.cancelled()).await else {
        return ExitCode::SUCCESS;
    };
    let stdout = std::io::stdout().lock();
    match newsflow_watch::run(&client, &cli.subject, stdout, shutdown.cancelled()).await {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`newsflow-watch | head`): nothing is left to print to.
        Err(WatchError::Write(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{PROGRAM}: {error}");
            ExitCode::FAILURE
        }
    }
}
