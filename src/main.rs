//! `meridian`: the one binary of every role. Parses flags, loads the
//! configuration, sets up logging and hands over to the role.

mod cli;
mod observe;
mod sim_list;
mod up;

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let config = match cli.config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("meridian: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = cli::init_tracing(&config.log) {
        eprintln!("meridian: {e:#}");
        return ExitCode::from(2);
    }
    let shutdown = cli::shutdown_on_signals();
    match cli.run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("meridian: {e:#}");
            ExitCode::FAILURE
        }
    }
}
