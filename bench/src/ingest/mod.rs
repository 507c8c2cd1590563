//! `meridian-bench ingest`: samples per second from QUIC producers into
//! Redis through the ingest role, against `redis-benchmark` XADD on the same
//! Redis in the same run.
//!
//! Per payload size, three phases on one private `redis-server`:
//! 1. baseline: `redis-benchmark -P 64 -r 1000 XADD … MAXLEN ~ n * f <payload>`,
//!    sized to run a few seconds (a short calibration run picks `-n`);
//! 2. the store writer's ceiling: [`RedisStore::append`] of `ingest.batch_max`
//!    entries shaped like the ingest's, with 1 pipeline in flight (what the
//!    ingest's single writer task does) and with 4, without QUIC;
//! 3. the ingest path: an in-process [`Ingest`] and K synthetic producers
//!    (own QUIC endpoint each, on their own runtime so their CPU can be told
//!    apart), for a fixed time; throughput from acknowledgements, then a
//!    check that every acknowledged sample is in Redis.
//!
//! Layout:
//! - this file: the flags and the loop over payload sizes and phases.
//! - `baseline`: phase 1, redis-benchmark; `writer`: phase 2, the store writer alone;
//!   `path`: phase 3, producers → ingest → Redis (the producers are [`crate::producer`]).
//! - `results`: what was measured; `table`: how `ingest` alone prints it.

mod baseline;
mod path;
mod results;
mod table;
mod writer;

pub use results::IngestResults;

use crate::measure::NamedRuntime;
use crate::progress::Say;
use crate::redis_tools::{self, require_tools};
use crate::shutdown::interrupted;
use anyhow::{bail, Context};
use baseline::baseline;
use clap::Args;
use meridian_config::Config;
use meridian_proto::{keys, Category, CscId, TopicId};
use path::ingest_path;
use results::Row;
use table::{ms, print_report};
use tokio_util::sync::CancellationToken;
use writer::writer_alone;

/// Thread-name prefix of the load generator's runtime (Linux keeps 15 bytes).
const LOAD_THREADS: &str = "bench-load";

/// The stream of telemetry topic `name` of CSC instance `csc:index`, as the
/// ingest keys it (`proto::keys`, the keyspace's one home).
fn telemetry_key(csc: &str, index: u32, name: &str) -> anyhow::Result<String> {
    let topic = TopicId::new(CscId::new(csc, index)?, Category::Telemetry, name)?;
    Ok(keys::stream(&topic))
}

/// Streams of the reference baseline (`redis-benchmark -r 1000`): many
/// topics, as a site has.
pub const SPREAD_STREAMS: u32 = 1000;

/// The goal this bench tracks: the bridge keeps at least this fraction of
/// what Redis itself takes with a well-pipelined client.
pub const GOAL_RATIO: f64 = 0.5;

#[derive(Args, Debug, Clone)]
pub struct IngestArgs {
    /// Seconds each payload size streams through the ingest (after a 0.5 s warm-up).
    #[arg(long, default_value_t = 5.0, value_name = "S")]
    duration_s: f64,
    /// Synthetic producers, each with its own QUIC connection and CSC (`Bench:<i>`).
    #[arg(long, default_value_t = 4, value_name = "K")]
    producers: u32,
    /// Samples per Batch frame.
    #[arg(long, default_value_t = 256, value_name = "B")]
    batch: usize,
    /// Batch frames a producer may have sent but not yet had acknowledged.
    #[arg(long, default_value_t = 8, value_name = "FRAMES")]
    window: usize,
    /// Stored payload sizes in bytes (the `f` field: the sample's fields as JSON).
    #[arg(long, value_delimiter = ',', default_value = "200,4096", value_name = "BYTES")]
    payload: Vec<usize>,
    /// Seconds each redis-benchmark baseline should take.
    #[arg(long, default_value_t = 3.0, value_name = "S")]
    baseline_s: f64,
    /// Seconds of each store-writer-alone measurement.
    #[arg(long, default_value_t = 1.5, value_name = "S")]
    writer_s: f64,
    /// Stream retention of both the baseline and the ingest (`MAXLEN ~`, store.telemetry_maxlen).
    #[arg(long, default_value_t = 10_000)]
    maxlen: usize,
    /// ingest.batch_max for the ingest under test (default: the configuration's default).
    #[arg(long, value_name = "ENTRIES")]
    batch_max: Option<usize>,
    /// ingest.batch_delay_ms for the ingest under test (default: the configuration's default).
    #[arg(long, value_name = "MS")]
    batch_delay_ms: Option<u64>,
    /// Worker threads of the producers' runtime (the ingest uses the main runtime's).
    #[arg(long, default_value_t = 2)]
    load_threads: usize,
}

pub async fn run(args: IngestArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let results = measure(&args, &Say::Print, shutdown).await?;
    print_report(&results.rows, &args, cores);
    Ok(())
}

/// Runs every phase of `args` and returns the figures; `say` gets the commentary.
pub async fn measure(
    args: &IngestArgs,
    say: &Say,
    shutdown: CancellationToken,
) -> anyhow::Result<IngestResults> {
    let args = args.clone();
    check_args(&args)?;
    require_tools()?;
    let redis = redis_tools::start_server()?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let defaults = Config::default().ingest;
    let batch_max = args.batch_max.unwrap_or(defaults.batch_max);
    let batch_delay_ms = args.batch_delay_ms.unwrap_or(defaults.batch_delay_ms);
    say.step(&format!(
        "meridian-bench ingest: {} producers × batch {} (window {} frames), {} s per size; \
         ingest.batch_max {batch_max}, batch_delay_ms {batch_delay_ms}; MAXLEN ~ {}; {cores} cores",
        args.producers, args.batch, args.window, args.duration_s, args.maxlen
    ));
    // Other work on the box skews every figure: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    say.step(&format!(
        "load average before the run: {} (anything near {cores} means the figures are skewed)",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    ));
    say.step(&format!(
        "redis-server {} on 127.0.0.1:{} (pid {}, dir {})",
        redis.version(),
        redis.port(),
        redis_tools::pid(&redis),
        redis.dir().display()
    ));
    let load_rt = NamedRuntime::new(LOAD_THREADS, args.load_threads)?;
    let phases = args.payload.len() * 4;
    let mut phase = 0;
    let mut rows = Vec::new();
    for &payload in &args.payload {
        let mut baselines = Vec::new();
        for streams in [SPREAD_STREAMS, args.producers] {
            phase += 1;
            interrupted(&shutdown)?;
            let b = baseline(&redis, payload, streams, &args, &shutdown)?;
            say.step(&format!(
                "[{phase}/{phases}] {payload} B  redis-benchmark XADD -P 64 -r {streams} -n {}: {:.0}/s",
                b.requests, b.rps
            ));
            baselines.push(b);
        }
        let same_streams = baselines.pop().context("two baselines")?;
        let spread = baselines.pop().context("two baselines")?;

        phase += 1;
        interrupted(&shutdown)?;
        let mut writer = Vec::new();
        for in_flight in [1, 4] {
            writer.push(writer_alone(&redis, payload, &args, batch_max, in_flight).await?);
            redis_tools::flush(&redis)?;
        }
        say.step(&format!(
            "[{phase}/{phases}] {payload} B  store writer alone, pipelines of {batch_max}: {}",
            writer
                .iter()
                .map(|w| format!(
                    "{:.0}/s with {} in flight ({:.1} µs CPU/entry)",
                    w.rate, w.in_flight, w.cpu_us
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));

        phase += 1;
        interrupted(&shutdown)?;
        let ingest = ingest_path(
            &redis,
            &load_rt,
            payload,
            &args,
            batch_max,
            batch_delay_ms,
            &shutdown,
        )
        .await?;
        redis_tools::flush(&redis)?;
        say.step(&format!(
            "[{phase}/{phases}] {payload} B  ingest path: {:.0} samples/s; ack latency of {} batches: \
             p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; sent {}, acked {}, stored {}",
            ingest.rate,
            ingest.latency.count,
            ms(ingest.latency.p50),
            ms(ingest.latency.p99),
            ms(ingest.latency.max),
            ingest.sent,
            ingest.acked,
            ingest.stored
        ));
        rows.push(Row {
            payload,
            spread,
            same_streams,
            writer,
            ingest,
        });
    }
    Ok(IngestResults {
        rows,
        producers: args.producers,
        redis_version: redis.version().to_string(),
    })
}

fn check_args(args: &IngestArgs) -> anyhow::Result<()> {
    if !(args.duration_s > 0.0 && args.baseline_s > 0.0 && args.writer_s > 0.0) {
        bail!("--duration-s, --baseline-s and --writer-s must be positive");
    }
    if args.producers == 0 || args.batch == 0 || args.window == 0 || args.load_threads == 0 {
        bail!("--producers, --batch, --window and --load-threads must be at least 1");
    }
    if args.payload.is_empty() || args.payload.iter().any(|&p| p < 16) {
        bail!("--payload: give sizes of at least 16 bytes, e.g. 200,4096");
    }
    Ok(())
}
