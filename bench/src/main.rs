//! `newsflow-bench`: parses flags, runs the benchmark, prints the table.

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = newsflow_bench::Cli::parse();
    match newsflow_bench::run(cli).await {
        Ok(outcome) => {
            println!("{}", outcome.table);
            println!("results: {}", outcome.out.display());
            if outcome.measured {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("newsflow-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
