//! Wiring only: parse the command line, run it with the process environment.

use clap::Parser;
use triplink_cli::{run, Cli};
use triplink_shared::config::ProcessEnv;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run(Cli::parse(), ProcessEnv).await
}
