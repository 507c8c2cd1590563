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

use crate::measure::{
    core_percent, micros_per, own_cpu, process_cpu, CpuSnapshot, NamedRuntime, Percentiles,
};
use crate::producer::{self, Load, Producer, Tally};
use crate::progress::Say;
use crate::redis_tools::{self, require_tools, RedisServer};
use crate::shutdown::{interrupted, sleep_unless};
use anyhow::{bail, Context};
use clap::Args;
use meridian_config::{Config, StoreBackend};
use meridian_manager::ingest::Ingest;
use meridian_manager::store::redis::RedisStore;
use meridian_manager::store::{Append, Store};
use meridian_manager::tls::Identity;
use meridian_producer::tls::ServerTrust;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Thread-name prefix of the load generator's runtime (Linux keeps 15 bytes).
const LOAD_THREADS: &str = "bench-load";

/// Time given to producers to reach a steady state before measuring.
const WARMUP: Duration = Duration::from_millis(500);

/// How long, after the run, the last batches may take to be acknowledged.
const DRAIN: Duration = Duration::from_secs(15);

/// Streams of the reference baseline (`redis-benchmark -r 1000`): many
/// topics, as a site has.
pub const SPREAD_STREAMS: u32 = 1000;

/// Requests of the redis-benchmark run that sizes the real one.
const CALIBRATION_REQUESTS: u64 = 30_000;

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

/// Everything `meridian-bench ingest` measured, for its tables and `meridian-bench all`'s report.
pub struct IngestResults {
    pub rows: Vec<Row>,
    pub producers: u32,
    pub redis_version: String,
}

/// The figures of one payload size.
pub struct Row {
    pub payload: usize,
    /// redis-benchmark over 1000 streams (`-r 1000`), the reference figure.
    pub spread: Baseline,
    /// redis-benchmark over as many streams as the ingest run writes (`-r K`).
    pub same_streams: Baseline,
    pub writer: Vec<WriterRun>,
    pub ingest: IngestRun,
}

pub struct Baseline {
    pub rps: f64,
    pub requests: u64,
    /// redis-server CPU per XADD.
    pub redis_cpu_us: f64,
}

pub struct WriterRun {
    pub in_flight: usize,
    pub rate: f64,
    /// This process's CPU per entry: the Redis client's share of the ingest's cost.
    pub cpu_us: f64,
}

pub struct IngestRun {
    pub rate: f64,
    pub latency: Percentiles,
    pub cpu: CpuSnapshot,
    pub wall: Duration,
    pub samples_in_window: u64,
    pub sent: u64,
    pub acked: u64,
    pub stored: u64,
    pub encode_us: f64,
    pub frame_bytes: f64,
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

/// redis-benchmark's rate for `payload` over `streams` streams, with `-n`
/// chosen from a short calibration run so the measured run takes about
/// `--baseline-s`.
fn baseline(
    redis: &RedisServer,
    payload: usize,
    streams: u32,
    args: &IngestArgs,
    shutdown: &CancellationToken,
) -> anyhow::Result<Baseline> {
    tokio::task::block_in_place(|| {
        let rough = redis_tools::benchmark_xadd(redis, payload, args.maxlen, streams, CALIBRATION_REQUESTS)?;
        redis_tools::flush(&redis)?;
        interrupted(shutdown)?;
        let requests = ((rough * args.baseline_s) as u64).max(CALIBRATION_REQUESTS);
        let before = process_cpu(redis_tools::pid(redis));
        let rps = redis_tools::benchmark_xadd(redis, payload, args.maxlen, streams, requests)?;
        let redis_cpu = process_cpu(redis_tools::pid(redis)).saturating_sub(before);
        redis_tools::flush(&redis)?;
        Ok(Baseline {
            rps,
            requests,
            redis_cpu_us: micros_per(redis_cpu, requests),
        })
    })
}

/// An entry as the ingest writes it for a sample of `payload` bytes.
fn ingest_shaped_fields(seq: u64, payload: usize) -> Vec<(String, String)> {
    let ts = meridian_proto::unix_now(std::time::SystemTime::now()).to_string();
    vec![
        ("seq".into(), seq.to_string()),
        ("src".into(), ts.clone()),
        ("ing".into(), ts),
        (
            "f".into(),
            format!(r#"{{"v":"{}"}}"#, "x".repeat(payload.saturating_sub(8))),
        ),
    ]
}

/// Entries per second [`RedisStore::append`] reaches with `in_flight`
/// pipelines of `batch_max` ingest-shaped entries at a time: the ceiling
/// of a store writer that keeps that many pipelines outstanding.
async fn writer_alone(
    redis: &RedisServer,
    payload: usize,
    args: &IngestArgs,
    batch_max: usize,
    in_flight: usize,
) -> anyhow::Result<WriterRun> {
    let store = RedisStore::connect(&redis.url())
        .await
        .context("connecting to the bench Redis")?;
    let batch: Arc<Vec<Append>> = Arc::new(
        (0..batch_max)
            .map(|i| Append {
                key: format!(
                    "meridian:{{Writer:{}}}:telemetry:payload{payload}",
                    i % args.producers as usize
                ),
                maxlen: args.maxlen,
                fields: ingest_shaped_fields(i as u64 + 1, payload),
            })
            .collect(),
    );
    let run_for = Duration::from_secs_f64(args.writer_s);
    let cpu0 = own_cpu();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (store, batch) = (store.clone(), batch.clone());
        tasks.spawn(async move {
            let mut written = 0u64;
            while started.elapsed() < run_for {
                store.append(&batch).await?;
                written += batch.len() as u64;
            }
            anyhow::Ok(written)
        });
    }
    let mut written = 0;
    while let Some(done) = tasks.join_next().await {
        written += done??;
    }
    Ok(WriterRun {
        in_flight,
        rate: written as f64 / started.elapsed().as_secs_f64(),
        cpu_us: micros_per(own_cpu().saturating_sub(cpu0), written),
    })
}

#[allow(clippy::too_many_arguments)]
async fn ingest_path(
    redis: &RedisServer,
    load_rt: &NamedRuntime,
    payload: usize,
    args: &IngestArgs,
    batch_max: usize,
    batch_delay_ms: u64,
    shutdown: &CancellationToken,
) -> anyhow::Result<IngestRun> {
    let mut config = Config::default();
    config.ingest.listen = (std::net::Ipv4Addr::LOCALHOST, 0).into();
    config.ingest.batch_max = batch_max;
    config.ingest.batch_delay_ms = batch_delay_ms;
    config.store.backend = StoreBackend::Redis;
    config.store.redis_url = redis.url();
    config.store.telemetry_maxlen = args.maxlen;
    config.validate().context("bench flags")?;

    let store = RedisStore::connect(&redis.url())
        .await
        .context("connecting to the bench Redis")?;
    let identity = Identity::self_signed("localhost")?;
    let trust = ServerTrust::Roots(identity.chain.clone());
    let ingest = Ingest::bind(&config, Arc::new(store), identity)?;
    let addr = ingest.local_addr();
    let stop_ingest = CancellationToken::new();
    let ingest_task = tokio::spawn(ingest.run(stop_ingest.clone()));
    let result = drive_producers(redis, load_rt, addr, trust, payload, args, shutdown).await;
    stop_ingest.cancel();
    match tokio::time::timeout(Duration::from_secs(10), ingest_task).await {
        Ok(joined) => joined.context("ingest task panicked")??,
        Err(_) => bail!("the ingest did not stop within 10 s"),
    }
    result
}

async fn drive_producers(
    redis: &RedisServer,
    load_rt: &NamedRuntime,
    addr: std::net::SocketAddr,
    trust: ServerTrust,
    payload: usize,
    args: &IngestArgs,
    shutdown: &CancellationToken,
) -> anyhow::Result<IngestRun> {
    let load = Load {
        payload,
        batch: args.batch,
        window: args.window,
    };
    let producers: Vec<Producer> = {
        let (load, count) = (load.clone(), args.producers);
        load_rt
            .handle()
            .spawn(async move {
                let mut connected = Vec::new();
                for i in 0..count {
                    connected.push(Producer::connect(addr, &trust, i, &load).await?);
                }
                anyhow::Ok(connected)
            })
            .await??
    };
    let tally = Arc::new(Tally::default());
    let stop = CancellationToken::new();
    let running: Vec<_> = producers
        .into_iter()
        .map(|p| load_rt.handle().spawn(p.run(tally.clone(), stop.clone(), DRAIN)))
        .collect();
    let _stop_on_exit = stop.clone().drop_guard();

    sleep_unless(WARMUP, shutdown).await?;
    let t0 = Instant::now();
    let (acked0, cpu0, encode0) = (
        tally.acked.load(Ordering::Relaxed),
        CpuSnapshot::take(LOAD_THREADS, redis_tools::pid(redis)),
        tally.encode_nanos.load(Ordering::Relaxed),
    );
    let (sent0, bytes0) = (
        tally.sent.load(Ordering::Relaxed),
        tally.bytes.load(Ordering::Relaxed),
    );
    sleep_unless(Duration::from_secs_f64(args.duration_s), shutdown).await?;
    let t1 = Instant::now();
    let (acked1, cpu1, encode1) = (
        tally.acked.load(Ordering::Relaxed),
        CpuSnapshot::take(LOAD_THREADS, redis_tools::pid(redis)),
        tally.encode_nanos.load(Ordering::Relaxed),
    );
    let (sent1, bytes1) = (
        tally.sent.load(Ordering::Relaxed),
        tally.bytes.load(Ordering::Relaxed),
    );
    stop.cancel();

    let mut latencies = Vec::new();
    for producer in running {
        let outcome = producer.await.context("producer task panicked")??;
        latencies.extend(
            outcome
                .latencies
                .into_iter()
                .filter(|(at, _)| *at >= t0 && *at <= t1)
                .map(|(_, latency)| latency),
        );
    }
    let (sent, acked) = (
        tally.sent.load(Ordering::Relaxed),
        tally.acked.load(Ordering::Relaxed),
    );
    let mut stored = 0;
    for i in 0..args.producers {
        let key = format!(
            "meridian:{{{}:{i}}}:telemetry:{}",
            producer::CSC,
            load.topic_name()
        );
        stored += tokio::task::block_in_place(|| redis_tools::entries_added(redis, &key))?;
    }
    if stored < acked {
        bail!("{acked} samples were acknowledged but only {stored} are in Redis: acknowledged data was lost");
    }
    let wall = t1 - t0;
    let samples_in_window = acked1 - acked0;
    let sent_in_window = (sent1 - sent0).max(1);
    Ok(IngestRun {
        rate: samples_in_window as f64 / wall.as_secs_f64(),
        latency: Percentiles::of(latencies),
        cpu: cpu1.since(&cpu0),
        wall,
        samples_in_window,
        sent,
        acked,
        stored,
        encode_us: (encode1 - encode0) as f64 / 1e3 / sent_in_window as f64,
        frame_bytes: (bytes1 - bytes0) as f64 / sent_in_window as f64,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn print_report(rows: &[Row], args: &IngestArgs, cores: usize) {
    let k = args.producers;
    println!();
    println!(
        "| payload | redis-benchmark XADD -P64, {SPREAD_STREAMS} streams (/s) | ingest path, {k} streams (samples/s) \
         | ratio | redis-benchmark, {k} streams (/s) | ratio vs {k} streams | ack p50 (ms) | ack p99 (ms) \
         | process CPU (µs/sample) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let i = &r.ingest;
        println!(
            "| {} B | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} | {:.1} | {:.1} | {:.1} |",
            r.payload,
            r.spread.rps,
            i.rate,
            i.rate / r.spread.rps,
            r.same_streams.rps,
            i.rate / r.same_streams.rps,
            ms(i.latency.p50),
            ms(i.latency.p99),
            micros_per(i.cpu.process, i.samples_in_window),
        );
    }
    println!();
    println!(
        "Where the time goes in the ingest run (% of one core of {cores}, and µs per sample), \
         and the store writer alone (RedisStore::append of ingest.batch_max entries, no QUIC):"
    );
    println!();
    println!(
        "| payload | ingest threads | producer threads | redis-server | redis µs/XADD: -r {SPREAD_STREAMS} / -r {k} / ingest \
         | encode µs/sample | wire B/sample | writer alone, 1 in flight | 4 in flight |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let i = &r.ingest;
        let writer = |n: usize| {
            r.writer
                .iter()
                .find(|w| w.in_flight == n)
                .map_or("-".to_string(), |w| {
                    format!("{:.0}/s, {:.1} µs CPU", w.rate, w.cpu_us)
                })
        };
        println!(
            "| {} B | {:.0}% ({:.1} µs) | {:.0}% ({:.1} µs) | {:.0}% ({:.1} µs) | {:.1} / {:.1} / {:.1} | {:.2} | {:.0} | {} | {} |",
            r.payload,
            core_percent(i.cpu.under_test(), i.wall),
            micros_per(i.cpu.under_test(), i.samples_in_window),
            core_percent(i.cpu.load, i.wall),
            micros_per(i.cpu.load, i.samples_in_window),
            core_percent(i.cpu.redis, i.wall),
            micros_per(i.cpu.redis, i.samples_in_window),
            r.spread.redis_cpu_us,
            r.same_streams.redis_cpu_us,
            micros_per(i.cpu.redis, i.samples_in_window),
            i.encode_us,
            i.frame_bytes,
            writer(1),
            writer(4),
        );
    }
    println!();
    for r in rows {
        let i = &r.ingest;
        println!(
            "{} B: sent {} samples, acknowledged {}, in Redis {} (XINFO entries-added): {}",
            r.payload,
            i.sent,
            i.acked,
            i.stored,
            if i.stored >= i.acked {
                "nothing acknowledged was lost"
            } else {
                "LOST DATA"
            }
        );
    }
    let verdicts: Vec<String> = rows
        .iter()
        .map(|r| {
            let ratio = r.ingest.rate / r.spread.rps;
            let verdict = if ratio >= GOAL_RATIO { "met" } else { "NOT met" };
            format!("{} B {ratio:.2} ({verdict})", r.payload)
        })
        .collect();
    println!(
        "Goal: ingest path ÷ redis-benchmark ({SPREAD_STREAMS} streams) ≥ {GOAL_RATIO}: {}.",
        verdicts.join(", "),
    );
}
