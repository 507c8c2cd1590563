//! `meridian bench`: throughput figures with their baselines measured in the same run.
//!
//! Benchmarks here are tools that print numbers (like quinn's `perf`), not
//! tests: each one starts what it needs (its own `redis-server`), measures
//! the stock tool's figure first as the baseline, then Meridian's, and
//! prints both with their ratio. docs/performance.md explains the figures.
//!
//! Layout:
//! - `fanout`: `bench fanout`, one frontend to N WebSocket clients vs a bare broadcast;
//!   its load generator runs as `bench fanout-clients` in a second process.
//! - `ingest`: `bench ingest`, QUIC producers → ingest → Redis vs `redis-benchmark`.
//! - `producer`: the synthetic producer the ingest bench drives.
//! - `redis_server`: a private `redis-server` and the `redis-cli`/`redis-benchmark` calls.
//! - `love`: `bench love`, LOVE's Django Channels relay (bench/love) vs Meridian's frontend on the same
//!   LOVE producers and browsers; `love_load` is that load (`bench love-clients` in a second process).
//! - `measure`: CPU time from `/proc`, latency percentiles, and named runtimes whose CPU can be told apart.

mod fanout;
mod ingest;
mod love;
mod love_load;
mod measure;
mod producer;
mod redis_server;

use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: Bench,
}

#[derive(Subcommand, Debug)]
enum Bench {
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
        Bench::Ingest(a) => ingest::run(a, shutdown).await,
        Bench::Fanout(a) => fanout::run(a, shutdown).await,
        Bench::FanoutClients(a) => fanout::run_clients(a, shutdown).await,
        Bench::Love(a) => love::run(a, shutdown).await,
        Bench::LoveClients(a) => love_load::run_clients(a, shutdown).await,
    }
}
