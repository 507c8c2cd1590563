//! `meridian-bench`: throughput figures with their baselines measured in the same run.
//!
//! Benchmarks here are tools that print numbers (like quinn's `perf`), not
//! tests, and not part of the `meridian` binary an operator runs: each one
//! starts what it needs (its own `redis-server`), measures the stock tool's
//! figure first as the baseline, then Meridian's, and prints both with their
//! ratio. docs/performance.md explains the figures.
//!
//! Layout:
//! - `all`: `meridian-bench all`, every bench below plus the night-like load and the LOVE
//!   comparison in one run, written as one markdown report (`report`).
//! - `ingest`: QUIC producers → ingest → Redis vs `redis-benchmark`; `producer` is its synthetic producer.
//! - `fanout`: one frontend to N WebSocket clients vs a bare broadcast; its browsers run as
//!   `meridian-bench fanout-clients` in a second process.
//! - `night`: the night-like load, every role a `meridian` process, browsers in this one.
//! - `love`: LOVE's Django Channels relay (`bench/love/`) vs Meridian's frontend on the same
//!   LOVE producers and browsers (`meridian-bench love-clients` in a second process).
//! - `report`: the markdown report's sections from the results (pure).
//! - `progress`: where a bench's commentary goes (lines, or `all`'s status line).
//! - `load_generator`: a browsers process and its line protocol, shared by `fanout` and `love`.
//! - `open_files`, `hops`: the open-file limit those browsers need; a sample's timestamps in a frame.
//! - `measure`: CPU time from `/proc`, latency percentiles, runtimes whose CPU can be told apart.
//! - `redis_tools`: `redis-cli` and `redis-benchmark` against the test harness's `redis-server`.
//! - `binaries`: where `meridian-bench` and the `meridian` binary it starts are.
//! - `shutdown`: Ctrl-C stops a bench between steps.

mod all;
mod binaries;
mod fanout;
mod hops;
mod ingest;
mod load_generator;
mod love;
mod measure;
mod night;
mod open_files;
mod producer;
mod progress;
mod redis_tools;
mod report;
pub mod shutdown;

use clap::Subcommand;
use tokio_util::sync::CancellationToken;

/// The benches, as `meridian-bench <bench>`.
#[derive(Subcommand, Debug)]
pub enum Bench {
    /// Every benchmark in one run (Redis, ingest, fan-out, night-like load, LOVE) as a markdown report.
    All(all::AllArgs),
    /// Ingest path (QUIC → ingest → Redis) against redis-benchmark XADD -P 64.
    Ingest(ingest::IngestArgs),
    /// Frontend fan-out (producers → ingest → Redis → frontend → N WebSocket clients) against a bare broadcast.
    Fanout(fanout::FanoutArgs),
    /// The fan-out bench's load generator, started by `fanout` in its own process.
    #[command(hide = true)]
    FanoutClients(fanout::ClientsArgs),
    /// LOVE's approach (Django Channels + channels_redis, one daphne process) and Meridian's frontend on the same LOVE load.
    Love(love::LoveArgs),
    /// The LOVE bench's browsers, started by `love` in their own process.
    #[command(hide = true)]
    LoveClients(love::ClientsArgs),
}

impl Bench {
    /// `all` draws a status line on stderr: the roles it runs in this
    /// process should then log only warnings unless RUST_LOG says otherwise.
    pub fn quiet_logs(&self) -> bool {
        matches!(self, Bench::All(_))
    }
}

/// Runs `bench` until it is done or `shutdown` fires.
pub async fn run(bench: Bench, shutdown: CancellationToken) -> anyhow::Result<()> {
    match bench {
        Bench::All(a) => all::run(a, shutdown).await,
        Bench::Ingest(a) => ingest::run(a, shutdown).await,
        Bench::Fanout(a) => fanout::run(a, shutdown).await,
        Bench::FanoutClients(a) => fanout::run_clients(a, shutdown).await,
        Bench::Love(a) => love::run(a, shutdown).await,
        Bench::LoveClients(a) => love::run_clients(a, shutdown).await,
    }
}
