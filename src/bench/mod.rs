//! `meridian bench`: throughput figures with their baselines measured in the same run.
//!
//! Benchmarks here are tools that print numbers (like quinn's `perf`), not
//! tests: each one starts what it needs (its own `redis-server`), measures
//! the stock tool's figure first as the baseline, then Meridian's, and
//! prints both with their ratio. docs/performance.md explains the figures.
//!
//! Layout:
//! - `all`: `bench all`, every bench below plus the night-like load and the LOVE
//!   comparison in one run, written as one markdown report (`report`).
//! - `night`: the night-like load, every role in its own process, browsers in this one.
//! - `report`: the report's tables from the results (pure).
//! - `progress`: where a bench's commentary goes (lines, or `bench all`'s status line).
//! - `fanout`: `bench fanout`, one frontend to N WebSocket clients vs a bare broadcast;
//!   its load generator runs as `bench fanout-clients` in a second process.
//! - `ingest`: `bench ingest`, QUIC producers → ingest → Redis vs `redis-benchmark`.
//! - `producer`: the synthetic producer the ingest bench drives.
//! - `redis_server`: a private `redis-server` and the `redis-cli`/`redis-benchmark` calls.
//! - `love`: `bench love`, LOVE's Django Channels relay (bench/love) vs Meridian's frontend on the same
//!   LOVE producers and browsers; `love_load` is that load (`bench love-clients` in a second process).
//! - `clients`: the load generator process and its line protocol, shared by `fanout` and `love`;
//!   the open-file limit, and a frame's sample timestamps.
//! - `measure`: CPU time from `/proc`, latency percentiles, and named runtimes whose CPU can be told apart.

mod all;
mod clients;
mod fanout;
mod ingest;
mod love;
mod love_load;
mod measure;
mod night;
mod producer;
mod progress;
mod redis_server;
mod report;

use anyhow::bail;
use clap::{Args, Subcommand};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: Bench,
}

impl BenchArgs {
    /// `bench all` draws a status line on stderr: the roles it runs in this
    /// process should then log only warnings unless RUST_LOG says otherwise.
    pub fn quiet_logs(&self) -> bool {
        matches!(self.what, Bench::All(_))
    }
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// Every benchmark in one run (Redis, ingest, fan-out, night-like load, LOVE) as a markdown report.
    All(all::AllArgs),
    /// Ingest path (QUIC → ingest → Redis) against redis-benchmark XADD -P 64.
    Ingest(ingest::IngestArgs),
    /// Frontend fan-out (producers → ingest → Redis → frontend → N WebSocket clients) against a bare broadcast.
    Fanout(fanout::FanoutArgs),
    /// The fan-out bench's load generator, started by `bench fanout` in its own process.
    #[command(hide = true)]
    FanoutClients(fanout::ClientsArgs),
    /// LOVE's approach (Django Channels + channels_redis, one daphne process) and Meridian's frontend on the same LOVE load.
    Love(love::LoveArgs),
    /// The LOVE bench's browsers, started by `bench love` in their own process.
    #[command(hide = true)]
    LoveClients(love_load::ClientsArgs),
}

pub async fn run(args: BenchArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    match args.what {
        Bench::All(a) => all::run(a, shutdown).await,
        Bench::Ingest(a) => ingest::run(a, shutdown).await,
        Bench::Fanout(a) => fanout::run(a, shutdown).await,
        Bench::FanoutClients(a) => fanout::run_clients(a, shutdown).await,
        Bench::Love(a) => love::run(a, shutdown).await,
        Bench::LoveClients(a) => love_load::run_clients(a, shutdown).await,
    }
}

/// Fails if the run was interrupted (Ctrl-C), so a bench stops between steps.
fn interrupted(shutdown: &CancellationToken) -> anyhow::Result<()> {
    if shutdown.is_cancelled() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d`, or fails if the run is interrupted meanwhile.
async fn sleep_unless(d: Duration, shutdown: &CancellationToken) -> anyhow::Result<()> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = shutdown.cancelled() => bail!("interrupted"),
    }
}
