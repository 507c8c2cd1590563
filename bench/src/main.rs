//! `meridian-bench`: parses the bench's flags, sets up logging (the roles it
//! runs in this process log through it) and runs the bench.

use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// Meridian's benchmarks, each against a baseline measured in the same run (see docs/performance.md).
#[derive(Parser, Debug)]
#[command(name = "meridian-bench", version)]
struct Cli {
    #[command(subcommand)]
    bench: meridian_bench::Bench,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // RUST_LOG wins; else what the roles log by default (`log.filter`), or
    // only warnings under `all`'s status line.
    let default = if cli.bench.quiet_logs() { "warn" } else { "info" };
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => match EnvFilter::try_new(&env) {
            Ok(filter) => filter,
            Err(e) => {
                eprintln!("meridian-bench: RUST_LOG={env:?}: {e}");
                return ExitCode::from(2);
            }
        },
        _ => EnvFilter::new(default),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let shutdown = meridian_bench::shutdown::on_signals();
    match meridian_bench::run(cli.bench, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meridian-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
