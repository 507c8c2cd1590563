//! `meridian-bench fanout`: how many browsers one frontend core serves, and
//! how late their samples arrive, against a bare WebSocket broadcast of the
//! same frames measured in the same run.
//!
//! One private `redis-server`; in this process an ingest and a frontend on
//! port 0, each on its own tokio runtime (threads named `bench-ingest`,
//! `bench-front`) so their CPU is read per thread from `/proc/self/task`;
//! synthetic M1M3 producers (one QUIC connection per `MTM1M3:<i>` instance,
//! threads `bench-prod`) publish the 50 Hz telemetry topics of the
//! simulator's MTM1M3 interface, with the simulator's values, until there
//! are `--topics` of them.
//!
//! The browsers are a second process (`meridian-bench fanout-clients`,
//! hidden), so the frontend's memory per connection is this process's RSS
//! delta and the load generator's CPU is its own. Each of the N clients
//! subscribes to every topic (one request per topic, as a dashboard does)
//! and counts the samples of every batch frame; the first `--lag-clients`
//! also parse each sample's `source_ts`, `ingest_ts` and `frontend_ts` for
//! the producer → client lag and its hops.
//!
//! Per client count, two runs: the frontend (producers → QUIC → ingest →
//! Redis → hub → browsers), then the baseline: a bare axum/tungstenite
//! server (threads `bench-bare`, as many as the frontend's, the same socket
//! settings) that builds one batch frame of the same samples per tick and
//! broadcasts the same bytes to every client (no Redis, no hub, no
//! per-client encoding). The frontend runs first so that its RSS figures
//! are not flattered by memory the bare server freed. A run starts once the
//! frontend is idle again (or says that it was not).
//!
//! Layout:
//! - this file: the setup of a whole bench and its loop over client counts.
//! - `args`: the flags, thread names, timings and the goal the parts share.
//! - `topics`: the M1M3 topics published and subscribed to.
//! - `servers`: the ingest and frontend under test on their own runtimes; pinning them to a core.
//! - `publisher`: the synthetic M1M3 producers.
//! - `bare`: the baseline, a bare broadcast of the same frames.
//! - `run`: one measured run (connect, warm up, measure, wait until quiet).
//! - `clients`: the bench's side of the browsers process (start it, read its counters).
//! - `browsers`: the browsers process itself (`fanout-clients`); `frames`: how it counts and times a frame.
//! - `results`: the figures of a run; `table`: how `fanout` alone prints them.

mod args;
mod bare;
mod browsers;
mod clients;
mod frames;
mod publisher;
mod results;
mod run;
mod servers;
mod table;
mod topics;

pub use args::{FanoutArgs, GOAL_CLIENTS, GOAL_CORES, GOAL_DELIVERED, GOAL_P99};
pub use browsers::{run_clients, ClientsArgs};
pub use results::{FanoutResults, Run, Server};
pub use table::memory_line;
pub use topics::fast_topics;

use crate::measure::NamedRuntime;
use crate::open_files::ensure_fds;
use crate::progress::Say;
use crate::redis_tools::{self, require_tools, RedisServer};
use crate::shutdown::{interrupted, sleep_unless};
use anyhow::{bail, Context};
use args::{BARE_THREADS, CSC, FRONT_THREADS, INGEST_THREADS, PRODUCER_THREADS};
use bare::{start_bare, Bare};
use meridian_config::{Config, StoreBackend};
use meridian_proto::browser::FrameFormat;
use meridian_proto::StreamId;
use publisher::{start_producers, Flow};
use run::{measure, measure_memory, RunContext};
use servers::{pin, start_frontend, start_ingest};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use table::{print_report, run_line};
use tokio_util::sync::CancellationToken;
use topics::plan;

/// The token the bench frontend accepts.
const TOKEN: &str = "bench-token";

/// File descriptors kept for everything but the client connections.
const SPARE_FDS: u64 = 256;

pub async fn run(args: FanoutArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let r = measure_all(&args, &Say::Print, shutdown).await?;
    print_report(&r.runs, r.memory.as_ref(), &args, r.tick, cores);
    Ok(())
}

/// Runs every client count of `args` against both servers and returns the
/// figures; `say` gets the commentary.
pub async fn measure_all(
    args: &FanoutArgs,
    say: &Say,
    shutdown: CancellationToken,
) -> anyhow::Result<FanoutResults> {
    let args = args.clone();
    check_args(&args)?;
    require_tools()?;
    let topics = Arc::new(plan(args.topics)?);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let redis = redis_tools::start_server()?;
    let config = bench_config(&args, &redis)?;
    let tick = Duration::from_millis(config.frontend.tick_ms);
    let mean_json = topics.iter().map(|t| t.json.len()).sum::<usize>() as f64 / topics.len() as f64;
    say.step(&format!(
        "meridian-bench fanout: {} topics of {CSC} telemetry at {} Hz ({:.0} samples/s, mean {:.0} B of fields JSON, \
         largest {} {} B), every client subscribed to all; frontend.tick_ms {}; {} frontend thread(s); {cores} cores; \
         {:?} data frames (mean {:.0} B per sample as MessagePack)",
        topics.len(),
        args.rate_hz,
        topics.len() as f64 * args.rate_hz,
        mean_json,
        topics.iter().max_by_key(|t| t.json.len()).map_or("-", |t| t.schema.name.as_str()),
        topics.iter().map(|t| t.json.len()).max().unwrap_or(0),
        tick.as_millis(),
        args.frontend_threads,
        args.format,
        topics
            .iter()
            .map(|t| meridian_proto::msgpack::sample_message(&t.id, StreamId::new(1, 0), 0.0, 0.0, 0.0, &t.json).0.len())
            .sum::<usize>() as f64
            / topics.len() as f64,
    ));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    say.step(&format!(
        "load average before the run: {} (anything near {cores} means the figures are skewed)",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    ));
    say.step(&format!(
        "redis-server {} on 127.0.0.1:{} (pid {}); lag from the first {} clients of each run",
        redis.version(),
        redis.port(),
        redis_tools::pid(&redis),
        args.lag_clients
    ));
    if std::env::var_os("RUST_LOG").is_none() && matches!(say, Say::Print) {
        println!(
            "(the frontend logs every connection at INFO; RUST_LOG=warn keeps the output to the figures)"
        );
    }

    let front_rt = NamedRuntime::new(FRONT_THREADS, args.frontend_threads)?;
    let bare_rt = NamedRuntime::new(BARE_THREADS, args.frontend_threads)?;
    let ingest_rt = NamedRuntime::new(INGEST_THREADS, 1)?;
    let producer_rt = NamedRuntime::new(PRODUCER_THREADS, 1)?;
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();

    let (ingest_addr, trust) = start_ingest(&ingest_rt, &config, stop.clone()).await?;
    let (frontend_addr, hub) = start_frontend(&front_rt, &config, stop.clone()).await?;
    let bare = Arc::new(Bare::new(args.format));
    // One frame per tick with every topic's new sample: no more often than the topics publish.
    let bare_period = tick.max(Duration::from_secs_f64(1.0 / args.rate_hz));
    let bare_addr = start_bare(&bare_rt, bare.clone(), &topics, bare_period, stop.clone()).await?;
    let flow = Arc::new(Flow::default());
    start_producers(
        &producer_rt,
        ingest_addr,
        trust,
        &topics,
        &args,
        flow.clone(),
        stop.clone(),
    )
    .await?;
    if args.pin {
        say.step(&pin(cores, redis_tools::pid(&redis)));
    }

    // One period of data so that every stream exists and has a last value.
    flow.sending.store(true, Ordering::Relaxed);
    let published = flow.acked.load(Ordering::Relaxed) + topics.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while flow.acked.load(Ordering::Relaxed) < published {
        if Instant::now() > deadline {
            bail!("the ingest did not acknowledge the first samples within 10 s");
        }
        sleep_unless(Duration::from_millis(20), &shutdown).await?;
    }
    flow.sending.store(false, Ordering::Relaxed);

    let subscriptions: Vec<String> = topics
        .iter()
        .map(|t| format!("{}/{}", t.id.csc, t.id.topic))
        .collect();
    let frontend_url = match args.format {
        FrameFormat::Json => format!("ws://{frontend_addr}/ws?token={TOKEN}"),
        FrameFormat::Msgpack => format!("ws://{frontend_addr}/ws?token={TOKEN}&format=msgpack"),
    };
    let context = |label: String| RunContext {
        args: &args,
        redis: &redis,
        flow: &flow,
        bare: &bare,
        hub: &hub,
        topics: topics.len(),
        cores,
        label,
        say,
    };
    let phases = args.clients.len() * 2 + usize::from(args.memory_clients > 0);
    let mut phase = 0;
    let mut memory = None;
    if args.memory_clients > 0 {
        phase += 1;
        let n = args.memory_clients;
        let ctx = context(format!("[{phase}/{phases}] memory, {n} idle clients"));
        match ensure_fds(n as u64 + SPARE_FDS) {
            Ok(()) => {
                let setup = measure_memory(&ctx, n, &frontend_url, &subscriptions, &shutdown).await?;
                say.step(&format!(
                    "{}: {:.1} KiB per connection connected, {:.1} KiB connected and subscribed to {} topics \
                     (RSS growth of this process before any data flowed; subscribed in {:.1} s)",
                    ctx.label,
                    setup.rss_connected / 1024.0,
                    setup.rss_subscribed / 1024.0,
                    topics.len(),
                    setup.subscribed_in.as_secs_f64(),
                ));
                memory = Some((n, setup));
            }
            Err(reason) => say.step(&format!("{}: skipped: {reason}", ctx.label)),
        }
    }
    let mut runs = Vec::new();
    let mut frontend_quiet = true;
    for &n in &args.clients {
        if let Err(reason) = ensure_fds(n as u64 + SPARE_FDS) {
            say.step(&format!("{n} clients: skipped: {reason}"));
            phase += 2;
            continue;
        }
        for server in [Server::Frontend, Server::Bare] {
            phase += 1;
            interrupted(&shutdown)?;
            let ctx = context(format!("[{phase}/{phases}] {n} clients, {}", server.name()));
            let url = match server {
                Server::Frontend => frontend_url.clone(),
                Server::Bare => format!("ws://{bare_addr}/ws"),
            };
            let subscribe = match server {
                Server::Frontend => subscriptions.as_slice(),
                Server::Bare => &[],
            };
            let (run, quiet) = measure(&ctx, server, n, &url, subscribe, !frontend_quiet, &shutdown).await?;
            frontend_quiet = quiet;
            say.step(&run_line(&ctx.label, &run));
            runs.push(run);
        }
    }
    stop.cancel();
    Ok(FanoutResults {
        runs,
        memory,
        topics: topics.len(),
        rate_hz: args.rate_hz,
        tick,
        format: args.format,
    })
}

fn check_args(args: &FanoutArgs) -> anyhow::Result<()> {
    if args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--clients: give client counts of at least 1, e.g. 100,1000");
    }
    if args.topics == 0 || args.frontend_threads == 0 {
        bail!("--topics and --frontend-threads must be at least 1");
    }
    if args.rate_hz.is_nan() || args.rate_hz <= 0.0 || args.rate_hz > 1000.0 {
        bail!("--rate-hz must be in (0, 1000]");
    }
    if args.duration_s.is_nan() || args.duration_s <= 0.0 {
        bail!("--duration-s must be positive");
    }
    Ok(())
}

/// The configuration of the ingest and frontend under test.
fn bench_config(args: &FanoutArgs, redis: &RedisServer) -> anyhow::Result<Config> {
    let mut config = Config::default();
    config.ingest.listen = (std::net::Ipv4Addr::LOCALHOST, 0).into();
    config.frontend.listen = (std::net::Ipv4Addr::LOCALHOST, 0).into();
    config.frontend.tokens = vec![TOKEN.to_string()];
    if let Some(tick) = args.tick_ms {
        config.frontend.tick_ms = tick;
    }
    config.store.backend = StoreBackend::Redis;
    config.store.redis_url = redis.url();
    // The ingest alone is measured, without the ScriptQueue deriver beside it.
    config.ingest.script_queue_state = false;
    config.validate().context("bench flags")?;
    Ok(config)
}
