//! `newsflow-bench`: parses flags, runs the benchmark, prints the table.

use std::process::ExitCode;

use clap::Parser as _;

/// The same allocator as data-streams, so that the in-memory read ceiling served from this
/// process is built like the service it is compared with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
