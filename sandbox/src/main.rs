//! `concur-sandbox`: see `concur-sandbox --help` and sandbox/README.md.

use clap::Parser;
use concur_sandbox::{spawn, Config};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = Config::parse();
    let sandbox = match spawn(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("concur-sandbox: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("concur-sandbox listening on {}", sandbox.local_url);
    let result = tokio::select! {
        r = sandbox.wait() => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("concur-sandbox: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
