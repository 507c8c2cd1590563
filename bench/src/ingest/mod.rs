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
//! - this file: the loop over payload sizes and phases; `args`: the flags and shared figures.
//! - `baseline`: phase 1, redis-benchmark; `writer`: phase 2, the store writer alone;
//!   `path`: phase 3, producers → ingest → Redis (the producers are [`crate::producer`]).
//! - `results`: what was measured; `table`: how `ingest` alone prints it.

mod args;
mod baseline;
mod path;
mod results;
mod table;
mod writer;

pub use args::{IngestArgs, GOAL_RATIO, SPREAD_STREAMS};
pub use results::IngestResults;

use crate::measure::NamedRuntime;
use crate::progress::Say;
use crate::redis_tools::{self, require_tools};
use crate::shutdown::interrupted;
use anyhow::{bail, Context};
use args::LOAD_THREADS;
use baseline::baseline;
use meridian_config::Config;
use path::ingest_path;
use results::Row;
use table::{ms, print_report};
use tokio_util::sync::CancellationToken;
use writer::writer_alone;

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
