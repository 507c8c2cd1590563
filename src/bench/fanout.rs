//! `meridian bench fanout`: how many browsers one frontend core serves, and
//! how late their samples arrive, against a bare WebSocket broadcast of the
//! same frames measured in the same run.
//!
//! One private `redis-server`; in this process an [`Ingest`] and a
//! [`Frontend`] on port 0, each on its own tokio runtime (threads named
//! `bench-ingest`, `bench-front`) so their CPU is read per thread from
//! `/proc/self/task`; synthetic M1M3 producers (one QUIC connection per
//! `MTM1M3:<i>` instance, threads `bench-prod`) publish the 50 Hz telemetry
//! topics of the simulator's MTM1M3 interface, with the simulator's values,
//! until there are `--topics` of them.
//!
//! The browsers are a second process (`meridian bench fanout-clients`,
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

use super::clients::{commands, ensure_fds, field, hops, serve, LoadGenerator, Recorder};
use super::measure::{core_percent, micros_per, process_cpu, threads_cpu, NamedRuntime, Percentiles};
use super::producer::read_frame;
use super::progress::Say;
use super::redis_server::{require_tools, RedisServer};
use super::{interrupted, sleep_unless};
use anyhow::{bail, Context};
use axum::extract::ws::{Message as ServerMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use meridian_config::{Config, StoreBackend};
use meridian_manager::frontend::{Frontend, HubStats};
use meridian_manager::ingest::Ingest;
use meridian_manager::tls::Identity;
use meridian_producer::tls::{client_config, ServerTrust};
use meridian_proto::browser::FrameFormat;
use meridian_proto::{
    encode_frame, unix_now, Category, CscId, Fields, FrameBuffer, Hello, IngestFrame, ProducerFrame, Sample,
    StreamId, TopicId, TopicSchema, PROTOCOL_VERSION,
};
use meridian_sim::interface::Interface;
use meridian_sim::signal::{Rng, TopicSignal};
use meridian_store::redis::RedisStore;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Thread-name prefixes of the runtimes (Linux keeps 15 bytes of a name).
const FRONT_THREADS: &str = "bench-front";
const BARE_THREADS: &str = "bench-bare";
const INGEST_THREADS: &str = "bench-ingest";
const PRODUCER_THREADS: &str = "bench-prod";

/// The CSC whose telemetry the producers publish.
const CSC: &str = "MTM1M3";

/// The token the bench frontend accepts.
const TOKEN: &str = "bench-token";

/// Time for the RSS to settle after the clients connected, and for the
/// frontend to forget the clients of the previous run.
const SETTLE: Duration = Duration::from_secs(1);

/// Longest wait for the server to become idle after a run's clients left.
const QUIET_TIMEOUT: Duration = Duration::from_secs(30);

/// Data flows this long before the measurement window opens.
const WARMUP: Duration = Duration::from_secs(1);

/// Clients the load generator connects (handshake and subscriptions) at once.
const CONNECT_CONCURRENCY: usize = 128;

/// File descriptors kept for everything but the client connections.
const SPARE_FDS: u64 = 256;

/// What each sample object of a batch frame carries once; counting it counts samples.
const SAMPLE_MARKER: &str = "\"source_ts\":";

/// The goal this bench tracks (issue 5): this many clients on at most one
/// frontend core, with p99 producer → client lag under `GOAL_P99`, and
/// (so that conflation does not hide an overload) at least
/// `GOAL_DELIVERED` of the offered samples delivered.
pub const GOAL_CLIENTS: usize = 1000;
pub const GOAL_P99: Duration = Duration::from_millis(20);
pub const GOAL_CORES: f64 = 1.0;
pub const GOAL_DELIVERED: f64 = 0.99;

#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Client counts to measure, one pair of runs (frontend, bare broadcast) each.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,1000,5000",
        value_name = "N"
    )]
    clients: Vec<usize>,
    /// Telemetry topics every client subscribes to (MTM1M3's 50 Hz topics over instances 1, 2, …).
    #[arg(long, default_value_t = 50, value_name = "T")]
    topics: usize,
    /// Samples per second of each topic.
    #[arg(long, default_value_t = 50.0, value_name = "HZ")]
    rate_hz: f64,
    /// Seconds of each measurement window (after a 1 s warm-up).
    #[arg(long, default_value_t = 5.0, value_name = "S")]
    duration_s: f64,
    /// Clients that parse every sample's timestamps for the lag figures (the others only count).
    #[arg(long, default_value_t = 50, value_name = "K")]
    lag_clients: usize,
    /// frontend.tick_ms under test; also the bare broadcast's period, if slower than the topics' (default: the configuration's).
    #[arg(long, value_name = "MS")]
    tick_ms: Option<u64>,
    /// Worker threads of the frontend's runtime (and of the bare server's): the cores it may use.
    #[arg(long, default_value_t = 1, value_name = "THREADS")]
    frontend_threads: usize,
    /// Idle clients of the memory measurement made before any data flows (0: none).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    memory_clients: usize,
    /// Producers publish in step (all topics at the same instant) instead of at spread phases.
    #[arg(long)]
    aligned: bool,
    /// Pin the server threads and redis-server to the first core and the clients to the last (taskset).
    #[arg(long)]
    pin: bool,
    /// Data frames as `json` text or `msgpack` binary (docs/protocol.md), for the frontend and the bare server alike.
    #[arg(long, default_value = "json", value_parser = parse_format)]
    format: FrameFormat,
}

fn parse_format(s: &str) -> Result<FrameFormat, String> {
    s.parse()
}

/// The load generator's own flags (`bench fanout-clients`, started by `bench fanout`).
#[derive(Args, Debug, Clone)]
pub struct ClientsArgs {
    /// WebSocket URL to connect to.
    #[arg(long)]
    url: String,
    /// Clients to connect.
    #[arg(long)]
    clients: usize,
    /// Clients that record the lag of every sample.
    #[arg(long)]
    lag_clients: usize,
    /// Topics to subscribe to, `CSC:INDEX/topic` (telemetry), comma-separated; none for the bare server.
    #[arg(long, value_delimiter = ',')]
    subscribe: Vec<String>,
}

/// One topic the producers publish and the clients subscribe to.
struct Topic {
    id: TopicId,
    schema: TopicSchema,
    /// One sample's fields from the simulator, sent every period.
    fields: Fields,
    /// The fields as the ingest stores them (JSON), for the bare baseline's frames.
    json: String,
}

/// MTM1M3's telemetry topics of at least 50 Hz, repeated over instances 1,
/// 2, … until there are `count`: each schema with its salindex and one
/// sample's fields from the simulator. `bench love` publishes the same
/// topics, so both benches load the servers alike.
pub fn fast_topics(count: usize) -> anyhow::Result<Vec<(TopicSchema, u32, Fields)>> {
    let interface = Interface::builtin(CSC).context("the simulator has no MTM1M3 interface")?;
    let fast: Vec<&TopicSchema> = interface
        .telemetry
        .iter()
        .filter(|t| t.rate_hz.is_some_and(|hz| hz >= 50.0))
        .collect();
    if fast.is_empty() {
        bail!("MTM1M3's interface has no 50 Hz telemetry topic");
    }
    let now = unix_now(SystemTime::now());
    Ok((0..count)
        .map(|i| {
            let schema = fast[i % fast.len()].clone();
            let salindex = 1 + (i / fast.len()) as u32;
            let fields = TopicSignal::new(&schema, &Rng::new(1)).sample(1.0, now);
            (schema, salindex, fields)
        })
        .collect())
}

/// The topics of a run: [`fast_topics`] with their ids and stored JSON.
fn plan(count: usize) -> anyhow::Result<Vec<Topic>> {
    fast_topics(count)?
        .into_iter()
        .map(|(schema, salindex, fields)| {
            let json = meridian_proto::value::fields_to_json(&fields);
            let id = TopicId::new(CscId::new(CSC, salindex)?, Category::Telemetry, &schema.name)?;
            Ok(Topic {
                id,
                schema,
                fields,
                json,
            })
        })
        .collect()
}

/// Everything `bench fanout` measured, for its tables and `bench all`'s report.
pub struct FanoutResults {
    /// Per client count, the frontend run then the bare broadcast's.
    pub runs: Vec<Run>,
    pub memory: Option<(usize, Setup)>,
    pub topics: usize,
    pub rate_hz: f64,
    pub tick: Duration,
    /// How data frames were encoded (both servers alike).
    pub format: FrameFormat,
}

/// Which server a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Frontend,
    Bare,
}

impl Server {
    /// The prefix of the threads that run it.
    fn threads(self) -> &'static str {
        match self {
            Server::Frontend => FRONT_THREADS,
            Server::Bare => BARE_THREADS,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Server::Frontend => "frontend",
            Server::Bare => "bare broadcast",
        }
    }
}

/// The figures of one run.
pub struct Run {
    pub clients: usize,
    pub server: Server,
    pub setup: Setup,
    pub wall: Duration,
    /// Samples per second each client would get if nothing were conflated.
    pub offered_per_client: f64,
    pub delivered: u64,
    pub frames: u64,
    pub bytes: u64,
    /// Clients the server closed (or whose connection failed) during the window.
    pub closed: u64,
    /// Producer → client, producer → ingest, ingest → frontend read, frontend read → client.
    pub lag: [Percentiles; 4],
    pub cpu: Cpu,
    /// RSS growth of this process per client at the end of the window.
    pub rss_loaded: f64,
    /// Frontend runs: the hub's counters over the window (entries read, inbox deliveries, events lost).
    pub hub: Option<(u64, u64, u64)>,
    /// The frontend was still busy with the previous run's clients when this run started.
    pub skewed: bool,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.delivered as f64 / self.wall.as_secs_f64()
    }

    pub fn fraction(&self) -> f64 {
        self.rate() / (self.offered_per_client * self.clients as f64)
    }

    pub fn cores(&self) -> f64 {
        core_percent(self.cpu.server, self.wall) / 100.0
    }
}

/// CPU time of every party at one instant.
#[derive(Clone, Copy, Default)]
pub struct Cpu {
    pub server: Duration,
    pub ingest: Duration,
    pub producers: Duration,
    pub redis: Duration,
    pub clients: Duration,
}

impl Cpu {
    fn take(server: Server, redis: u32, clients: u32) -> Cpu {
        Cpu {
            server: threads_cpu(server.threads()),
            ingest: threads_cpu(INGEST_THREADS),
            producers: threads_cpu(PRODUCER_THREADS),
            redis: process_cpu(redis),
            clients: process_cpu(clients),
        }
    }

    fn since(&self, e: &Cpu) -> Cpu {
        Cpu {
            server: self.server.saturating_sub(e.server),
            ingest: self.ingest.saturating_sub(e.ingest),
            producers: self.producers.saturating_sub(e.producers),
            redis: self.redis.saturating_sub(e.redis),
            clients: self.clients.saturating_sub(e.clients),
        }
    }
}

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
    let redis = tokio::task::block_in_place(RedisServer::start)?;
    let config = bench_config(&args, &redis)?;
    let tick = Duration::from_millis(config.frontend.tick_ms);
    let mean_json = topics.iter().map(|t| t.json.len()).sum::<usize>() as f64 / topics.len() as f64;
    say.step(&format!(
        "meridian bench fanout: {} topics of {CSC} telemetry at {} Hz ({:.0} samples/s, mean {:.0} B of fields JSON, \
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
        redis.version,
        redis.port(),
        redis.pid(),
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
        say.step(&pin(cores, redis.pid()));
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
    config.validate().context("bench flags")?;
    Ok(config)
}

/// Everything a run reads but does not own.
struct RunContext<'a> {
    args: &'a FanoutArgs,
    redis: &'a RedisServer,
    flow: &'a Arc<Flow>,
    bare: &'a Arc<Bare>,
    hub: &'a Arc<HubStats>,
    topics: usize,
    cores: usize,
    label: String,
    say: &'a Say,
}

/// How long connecting and subscribing took, and what the idle clients cost.
pub struct Setup {
    pub connect: Duration,
    pub subscribed_in: Duration,
    /// RSS growth of this process per client: connected, then subscribed (no data flowing).
    pub rss_connected: f64,
    pub rss_subscribed: f64,
}

/// Starts the load generator with `n` clients of `url`, waits until they
/// are connected, then until they are subscribed, measuring the RSS growth
/// of this process (the servers) after each step.
async fn connect_clients(
    ctx: &RunContext<'_>,
    n: usize,
    url: &str,
    subscribe: &[String],
    shutdown: &CancellationToken,
) -> anyhow::Result<(LoadGenerator, Setup)> {
    let rss0 = rss_bytes();
    let started = Instant::now();
    let lag_clients = ctx.args.lag_clients.min(n);
    let mut clients = spawn_clients(url, n, lag_clients, subscribe, ctx.args.pin, ctx.cores)?;
    let timeout = Duration::from_secs(30) + Duration::from_millis(20 * n as u64);
    let connected = clients.expect("connected", timeout, shutdown).await?;
    let connect = started.elapsed();
    let (ok, failed): (usize, usize) = (field(&connected, 1)?, field(&connected, 2)?);
    if ok < n {
        bail!(
            "{}: only {ok} of {n} clients connected ({failed} failed; see the load generator's errors above)",
            ctx.label
        );
    }
    sleep_unless(SETTLE, shutdown).await?;
    let rss_connected = rss_bytes().saturating_sub(rss0) as f64 / n as f64;
    clients.send("subscribe")?;
    let started = Instant::now();
    let ready = clients.expect("ready", timeout, shutdown).await?;
    let subscribed_in = started.elapsed();
    let (ok, failed): (usize, usize) = (field(&ready, 1)?, field(&ready, 2)?);
    if ok < n {
        bail!(
            "{}: only {ok} of {n} clients subscribed ({failed} failed; see the load generator's errors above)",
            ctx.label
        );
    }
    sleep_unless(SETTLE, shutdown).await?;
    let rss_subscribed = rss_bytes().saturating_sub(rss0) as f64 / n as f64;
    Ok((
        clients,
        Setup {
            connect,
            subscribed_in,
            rss_connected,
            rss_subscribed,
        },
    ))
}

/// The figure of memory per idle connection, as printed and reported.
pub fn memory_line(n: usize, m: &Setup, topics: usize) -> String {
    format!(
        "Memory per idle frontend connection ({n} clients, before any data flowed): {:.1} KiB connected, \
         {:.1} KiB subscribed to {topics} topics (target ≤ 16 KiB per idle connection).",
        m.rss_connected / 1024.0,
        m.rss_subscribed / 1024.0,
    )
}

/// Memory per idle frontend connection, measured before any data has
/// flowed (later runs reuse heap that earlier ones freed, which would
/// flatter the figure): `n` clients connect, then subscribe, then leave.
async fn measure_memory(
    ctx: &RunContext<'_>,
    n: usize,
    url: &str,
    subscribe: &[String],
    shutdown: &CancellationToken,
) -> anyhow::Result<Setup> {
    let (clients, setup) = connect_clients(ctx, n, url, subscribe, shutdown).await?;
    clients.quit().await;
    wait_quiet(ctx, shutdown).await?;
    Ok(setup)
}

/// One run: connect `n` idle clients (RSS), start the data, warm up,
/// measure for `--duration-s`, stop the data and the clients.
async fn measure(
    ctx: &RunContext<'_>,
    server: Server,
    n: usize,
    url: &str,
    subscribe: &[String],
    skewed: bool,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Run, bool)> {
    let args = ctx.args;
    let rss0 = rss_bytes();
    let (mut clients, setup) = connect_clients(ctx, n, url, subscribe, shutdown).await?;

    match server {
        Server::Frontend => ctx.flow.sending.store(true, Ordering::Relaxed),
        Server::Bare => ctx.bare.generating.store(true, Ordering::Relaxed),
    }
    let offered = || match server {
        Server::Frontend => ctx.flow.acked.load(Ordering::Relaxed),
        Server::Bare => ctx.bare.generated.load(Ordering::Relaxed) * ctx.topics as u64,
    };
    let hub = || {
        (
            ctx.hub.entries_read.load(Ordering::Relaxed),
            ctx.hub.deliveries.load(Ordering::Relaxed),
            ctx.hub.events_lost.load(Ordering::Relaxed),
        )
    };
    let mut progress = Progress::new(&ctx.label, n, ctx.say);
    let warm_until = Instant::now() + WARMUP;
    let mut last = (
        ClientStat::ask(&mut clients, "stat", shutdown).await?,
        Cpu::take(server, ctx.redis.pid(), clients.pid()),
        Instant::now(),
    );
    while Instant::now() < warm_until {
        sleep_unless(Duration::from_millis(500), shutdown).await?;
        let now = (
            ClientStat::ask(&mut clients, "stat", shutdown).await?,
            Cpu::take(server, ctx.redis.pid(), clients.pid()),
            Instant::now(),
        );
        progress.show("warm-up", &last, &now);
        last = now;
    }

    let stat0 = ClientStat::ask(&mut clients, "begin", shutdown).await?;
    let (t0, cpu0, offered0, hub0) = (
        Instant::now(),
        Cpu::take(server, ctx.redis.pid(), clients.pid()),
        offered(),
        hub(),
    );
    let window = Duration::from_secs_f64(args.duration_s);
    let mut last = (stat0, cpu0, t0);
    while t0.elapsed() + Duration::from_secs(1) < window {
        sleep_unless(Duration::from_secs(1), shutdown).await?;
        let now = (
            ClientStat::ask(&mut clients, "stat", shutdown).await?,
            Cpu::take(server, ctx.redis.pid(), clients.pid()),
            Instant::now(),
        );
        progress.show(
            &format!("{:.0}/{:.0} s", t0.elapsed().as_secs_f64(), window.as_secs_f64()),
            &last,
            &now,
        );
        last = now;
    }
    sleep_unless(window.saturating_sub(t0.elapsed()), shutdown).await?;
    let stat1 = ClientStat::ask(&mut clients, "end", shutdown).await?;
    let (t1, cpu1, offered1, hub1) = (
        Instant::now(),
        Cpu::take(server, ctx.redis.pid(), clients.pid()),
        offered(),
        hub(),
    );
    let rss_loaded = rss_bytes().saturating_sub(rss0) as f64 / n as f64;
    let lags = clients.expect("lags", Duration::from_secs(30), shutdown).await?;
    progress.done();

    ctx.flow.sending.store(false, Ordering::Relaxed);
    ctx.bare.generating.store(false, Ordering::Relaxed);
    clients.quit().await;
    // The next run starts on an idle server: the frontend has forgotten
    // these clients and worked off what it still held for them.
    let quiet = wait_quiet(ctx, shutdown).await?;

    let wall = t1 - t0;
    let run = Run {
        clients: n,
        server,
        setup,
        wall,
        offered_per_client: (offered1 - offered0) as f64 / wall.as_secs_f64(),
        delivered: stat1.samples - stat0.samples,
        frames: stat1.frames - stat0.frames,
        bytes: stat1.bytes - stat0.bytes,
        closed: stat1.closed - stat0.closed,
        lag: parse_lags(&lags)?,
        cpu: cpu1.since(&cpu0),
        rss_loaded,
        hub: (server == Server::Frontend).then(|| (hub1.0 - hub0.0, hub1.1 - hub0.1, hub1.2 - hub0.2)),
        skewed,
    };
    Ok((run, quiet))
}

/// Progress of a run: a line per second (rewritten in place on a terminal).
struct Progress<'a> {
    label: String,
    clients: usize,
    say: &'a Say,
}

impl<'a> Progress<'a> {
    fn new(label: &str, clients: usize, say: &'a Say) -> Progress<'a> {
        Progress {
            label: label.to_string(),
            clients,
            say,
        }
    }

    fn show(&mut self, when: &str, a: &(ClientStat, Cpu, Instant), b: &(ClientStat, Cpu, Instant)) {
        let secs = (b.2 - a.2).as_secs_f64().max(1e-3);
        let cpu = b.1.since(&a.1);
        let line = format!(
            "{}: {when}: {:.0} samples/s delivered ({:.0} per client), {:.0} frames/s, server {:.0}% of a core, clients {:.0}%",
            self.label,
            (b.0.samples - a.0.samples) as f64 / secs,
            (b.0.samples - a.0.samples) as f64 / secs / self.clients as f64,
            (b.0.frames - a.0.frames) as f64 / secs,
            cpu.server.as_secs_f64() * 100.0 / secs,
            cpu.clients.as_secs_f64() * 100.0 / secs,
        );
        self.say.tick(&line);
    }

    fn done(&self) {
        self.say.end_ticks();
    }
}

fn run_line(label: &str, r: &Run) -> String {
    format!(
        "{label}: connected in {:.1} s, subscribed in {:.1} s; {:.0} samples/s delivered ({:.1}% of offered), \
         lag p50 / p99 {} ms; server {:.2} cores",
        r.setup.connect.as_secs_f64(),
        r.setup.subscribed_in.as_secs_f64(),
        r.rate(),
        r.fraction() * 100.0,
        p50_p99(&r.lag[0]),
        r.cores(),
    )
}

fn print_report(
    runs: &[Run],
    memory: Option<&(usize, Setup)>,
    args: &FanoutArgs,
    tick: Duration,
    cores: usize,
) {
    let topics = args.topics;
    println!();
    println!(
        "| clients | server | delivered samples/s | of offered | frames/s | MB/s | lag p50 / p99 / max (ms) \
         | server cores | µs CPU per sample | CPU per connection (% of a core) \
         | RSS growth per connection under load (KiB) | closed |"
    );
    println!("|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---|---:|");
    for r in runs {
        // The bare runs reuse memory the frontend run before them freed: their RSS says nothing.
        let rss = match r.server {
            Server::Frontend => format!("{:.0}", r.rss_loaded / 1024.0),
            Server::Bare => "-".into(),
        };
        let lag = match r.lag[0].count {
            0 => "no samples".to_string(),
            _ => format!(
                "{:.1} / {:.1} / {:.1}",
                ms(r.lag[0].p50),
                ms(r.lag[0].p99),
                ms(r.lag[0].max)
            ),
        };
        println!(
            "| {} | {}{} | {:.0} | {:.1}% | {:.0} | {:.0} | {lag} | {:.2} | {} | {:.3} | {rss} | {} |",
            r.clients,
            r.server.name(),
            if r.skewed { " *" } else { "" },
            r.rate(),
            r.fraction() * 100.0,
            r.frames as f64 / r.wall.as_secs_f64(),
            r.bytes as f64 / r.wall.as_secs_f64() / 1e6,
            r.cores(),
            match r.delivered {
                0 => "-".to_string(),
                d => format!("{:.2}", micros_per(r.cpu.server, d)),
            },
            r.cores() * 100.0 / r.clients as f64,
            r.closed,
        );
    }
    if runs.iter().any(|r| r.skewed) {
        println!("* started while the frontend was still busy with the previous run's clients: skewed.");
    }
    println!();
    println!(
        "Lag per hop in the frontend runs (p50 / p99 ms): source_ts → ingest_ts (QUIC, ingest), ingest_ts → frontend_ts \
         (Redis write, XREAD, hub), frontend_ts → client (inbox, tick wait, WebSocket); and CPU of the other parties \
         (% of one core of {cores}):"
    );
    println!();
    println!(
        "| clients | producer → ingest | ingest → frontend | frontend → client | lag samples | ingest | producers \
         | redis-server | clients (load generator) | hub: entries read/s | inbox deliveries/s | server µs per inbox delivery |"
    );
    println!("|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs.iter().filter(|r| r.server == Server::Frontend) {
        let pct = |d: Duration| core_percent(d, r.wall);
        let (read, delivered, _) = r.hub.unwrap_or_default();
        println!(
            "| {} | {} | {} | {} | {} | {:.0}% | {:.0}% | {:.0}% | {:.0}% | {:.0} | {:.0} | {:.2} |",
            r.clients,
            p50_p99(&r.lag[1]),
            p50_p99(&r.lag[2]),
            p50_p99(&r.lag[3]),
            r.lag[0].count,
            pct(r.cpu.ingest),
            pct(r.cpu.producers),
            pct(r.cpu.redis),
            pct(r.cpu.clients),
            read as f64 / r.wall.as_secs_f64(),
            delivered as f64 / r.wall.as_secs_f64(),
            micros_per(r.cpu.server, delivered),
        );
    }
    println!();
    for pair in runs.chunks(2) {
        if let [f, b] = pair {
            let cpu_ratio = micros_per(f.cpu.server, f.delivered) / micros_per(b.cpu.server, b.delivered);
            println!(
                "{} clients: frontend ÷ bare broadcast: delivered {:.2}, server CPU per delivered sample {}, \
                 clients' CPU {:.0}% / {:.0}% of a core",
                f.clients,
                f.rate() / b.rate(),
                if cpu_ratio.is_finite() { format!("{cpu_ratio:.2}") } else { "-".into() },
                core_percent(f.cpu.clients, f.wall),
                core_percent(b.cpu.clients, b.wall),
            );
        }
    }
    if let Some((n, m)) = memory {
        println!("{}", memory_line(*n, m, topics));
    }
    let lost: u64 = runs.iter().filter_map(|r| r.hub).map(|h| h.2).sum();
    println!(
        "Offered per client: {topics} topics × {} Hz = {:.0} samples/s; telemetry beyond one frame per {} ms tick is conflated by design; events lost: {lost}.",
        args.rate_hz,
        topics as f64 * args.rate_hz,
        tick.as_millis()
    );
    let goal = runs
        .iter()
        .find(|r| r.server == Server::Frontend && r.clients == GOAL_CLIENTS);
    match goal {
        Some(r) => {
            let ok_cores = r.cores() <= GOAL_CORES;
            let ok_lag = r.lag[0].p99 < GOAL_P99;
            let ok_delivered = r.fraction() >= GOAL_DELIVERED;
            println!(
                "Goal: {GOAL_CLIENTS} clients on ≤ {GOAL_CORES} frontend core with p99 < {} ms: {} \
                 (cores {:.2} {}, p99 {:.1} ms {}, delivered {:.1}% of offered {}).",
                GOAL_P99.as_millis(),
                if ok_cores && ok_lag && ok_delivered {
                    "met"
                } else {
                    "NOT met"
                },
                r.cores(),
                if ok_cores { "ok" } else { "over" },
                ms(r.lag[0].p99),
                if ok_lag { "ok" } else { "over" },
                r.fraction() * 100.0,
                if ok_delivered {
                    "ok"
                } else {
                    "short: samples conflated"
                },
            );
        }
        None => println!("Goal: not measured (add {GOAL_CLIENTS} to --clients)."),
    }
}

/// `p50 / p99` in ms, or `-` without samples.
fn p50_p99(p: &Percentiles) -> String {
    match p.count {
        0 => "-".into(),
        _ => format!("{:.1} / {:.1}", ms(p.p50), ms(p.p99)),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Waits until the frontend's threads are idle (under 10% of a core over
/// 250 ms), at most `QUIET_TIMEOUT`; whether they became idle.
async fn wait_quiet(ctx: &RunContext<'_>, shutdown: &CancellationToken) -> anyhow::Result<bool> {
    const WINDOW: Duration = Duration::from_millis(250);
    let started = Instant::now();
    loop {
        let before = threads_cpu(FRONT_THREADS);
        sleep_unless(WINDOW, shutdown).await?;
        if threads_cpu(FRONT_THREADS).saturating_sub(before) < WINDOW / 10 {
            return Ok(true);
        }
        if started.elapsed() > QUIET_TIMEOUT {
            ctx.say.step(&format!(
                "{}: the frontend was still busy {QUIET_TIMEOUT:?} after the clients left; \
                 the next run starts anyway (marked *)",
                ctx.label
            ));
            return Ok(false);
        }
    }
}

/// This process's resident memory, from `/proc/self/status`.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Pins the frontend's threads and redis-server to the first core and
/// leaves the last to the load generator (started with `taskset`).
fn pin(cores: usize, redis: u32) -> String {
    if cores < 2 {
        return "--pin: one core only; nothing pinned".into();
    }
    let mut targets = vec![redis];
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.starts_with(FRONT_THREADS) || comm.starts_with(BARE_THREADS) {
                if let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) {
                    targets.push(tid);
                }
            }
        }
    }
    let all_ok = targets.iter().all(|tid| {
        std::process::Command::new("taskset")
            .args(["-p", "-c", "0", &tid.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    format!(
        "--pin: frontend and bare-server threads and redis-server on core 0{}, load generator on core {}",
        if all_ok { "" } else { " (taskset failed for some)" },
        cores - 1
    )
}

async fn start_ingest(
    rt: &NamedRuntime,
    config: &Config,
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, ServerTrust)> {
    let config = config.clone();
    let ingest = rt
        .handle()
        .spawn(async move {
            let store = RedisStore::connect(&config.store.redis_url)
                .await
                .context("connecting the ingest to the bench Redis")?;
            let identity = Identity::self_signed("localhost")?;
            let trust = ServerTrust::Roots(identity.chain.clone());
            let ingest = Ingest::bind(&config, Arc::new(store), identity)?;
            anyhow::Ok((ingest, trust))
        })
        .await??;
    let (ingest, trust) = ingest;
    let addr = ingest.local_addr();
    rt.handle().spawn(async move {
        if let Err(e) = ingest.run(stop).await {
            eprintln!("bench fanout: the ingest failed: {e}");
        }
    });
    Ok((addr, trust))
}

async fn start_frontend(
    rt: &NamedRuntime,
    config: &Config,
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, Arc<HubStats>)> {
    let config = config.clone();
    // Bound on its own runtime: the hub's reader and the Redis connections run there.
    let frontend = rt
        .handle()
        .spawn(async move {
            let store = RedisStore::connect(&config.store.redis_url)
                .await
                .context("connecting the frontend to the bench Redis")?;
            anyhow::Ok(Frontend::bind(&config, Arc::new(store)).await?)
        })
        .await??;
    let (addr, stats) = (frontend.local_addr(), frontend.stats());
    rt.handle().spawn(async move {
        if let Err(e) = frontend.run(stop).await {
            eprintln!("bench fanout: the frontend failed: {e}");
        }
    });
    Ok((addr, stats))
}

/// The synthetic producers' shared switches and counters.
#[derive(Default)]
struct Flow {
    /// Producers publish while set (between runs they keep their connections but stay quiet).
    sending: AtomicBool,
    /// Samples the ingest has acknowledged (stored), over every producer.
    acked: AtomicU64,
}

/// One QUIC producer per MTM1M3 instance of the plan, publishing all its
/// topics every period; the instances' phases are spread over the period
/// unless `--aligned`.
async fn start_producers(
    rt: &NamedRuntime,
    ingest: SocketAddr,
    trust: ServerTrust,
    topics: &[Topic],
    args: &FanoutArgs,
    flow: Arc<Flow>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut instances: Vec<(u32, Vec<(TopicSchema, Fields)>)> = Vec::new();
    for t in topics {
        let salindex = t.id.csc.salindex;
        match instances.last_mut() {
            Some((i, list)) if *i == salindex => list.push((t.schema.clone(), t.fields.clone())),
            _ => instances.push((salindex, vec![(t.schema.clone(), t.fields.clone())])),
        }
    }
    let period = Duration::from_secs_f64(1.0 / args.rate_hz);
    let count = instances.len() as u32;
    for (k, (salindex, list)) in instances.into_iter().enumerate() {
        let phase = if args.aligned {
            Duration::ZERO
        } else {
            period * k as u32 / count
        };
        let (trust, flow, stop) = (trust.clone(), flow.clone(), stop.clone());
        let connected = rt
            .handle()
            .spawn(async move { Publisher::connect(ingest, &trust, salindex, &list).await })
            .await??;
        rt.handle().spawn(async move {
            if let Err(e) = connected.run(period, phase, flow, stop).await {
                eprintln!("bench fanout: producer {CSC}:{salindex} failed: {e:#}");
            }
        });
    }
    Ok(())
}

/// A synthetic producer of one MTM1M3 instance over the real protocol:
/// hello with its topics' schemas, then one `Batch` of all of them per period.
struct Publisher {
    endpoint: quinn::Endpoint,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    frames: FrameBuffer,
    samples: Vec<Sample>,
}

impl Publisher {
    async fn connect(
        ingest: SocketAddr,
        trust: &ServerTrust,
        salindex: u32,
        topics: &[(TopicSchema, Fields)],
    ) -> anyhow::Result<Publisher> {
        let mut endpoint =
            quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into()).context("client endpoint")?;
        endpoint.set_default_client_config(client_config(trust, &meridian_config::TlsConfig::default())?);
        let conn = tokio::time::timeout(Duration::from_secs(5), endpoint.connect(ingest, "localhost")?)
            .await
            .context("QUIC handshake timed out")?
            .context("QUIC handshake")?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let hello = ProducerFrame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            producer_id: (u64::from(std::process::id()) << 32) | u64::from(salindex),
            csc: CSC.into(),
            salindex,
            all_indices: false,
            topics: topics.iter().map(|(s, _)| s.clone()).collect(),
        });
        let mut buf = Vec::new();
        encode_frame(&hello, &mut buf)?;
        send.write_all(&buf).await?;
        let mut frames = FrameBuffer::new();
        match tokio::time::timeout(Duration::from_secs(5), read_frame(&mut recv, &mut frames))
            .await
            .context("no answer to the hello")??
        {
            Some(IngestFrame::Welcome { .. }) => {}
            other => bail!("producer {CSC}:{salindex}: unexpected answer to the hello: {other:?}"),
        }
        let samples = topics
            .iter()
            .map(|(schema, fields)| Sample {
                topic: schema.name.clone(),
                category: Category::Telemetry,
                salindex: None,
                seq: 0,
                source_ts: 0.0,
                fields: fields.clone(),
            })
            .collect();
        Ok(Publisher {
            endpoint,
            send,
            recv,
            frames,
            samples,
        })
    }

    /// Publishes every `period` (from `phase` on) while `flow.sending`, until `stop`.
    async fn run(
        self,
        period: Duration,
        phase: Duration,
        flow: Arc<Flow>,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let Publisher {
            endpoint,
            mut send,
            recv,
            frames,
            mut samples,
        } = self;
        let acks = tokio::spawn(read_acks(recv, frames, flow.clone()));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut seq = 0u64;
        let mut buf = Vec::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            if !flow.sending.load(Ordering::Relaxed) {
                continue;
            }
            let source_ts = unix_now(SystemTime::now());
            for sample in &mut samples {
                seq += 1;
                sample.seq = seq;
                sample.source_ts = source_ts;
            }
            let frame = ProducerFrame::Batch(std::mem::take(&mut samples));
            buf.clear();
            encode_frame(&frame, &mut buf)?;
            if let ProducerFrame::Batch(s) = frame {
                samples = s;
            }
            send.write_all(&buf).await?;
        }
        let _ = send.finish();
        acks.abort();
        endpoint.close(0u32.into(), b"bench done");
        Ok(())
    }
}

/// Counts acknowledged samples (`Ack { up_to_seq }` covers every sample up to it).
async fn read_acks(
    mut recv: quinn::RecvStream,
    mut frames: FrameBuffer,
    flow: Arc<Flow>,
) -> anyhow::Result<()> {
    let mut acked = 0;
    loop {
        match read_frame(&mut recv, &mut frames).await? {
            Some(IngestFrame::Ack { up_to_seq }) => {
                flow.acked
                    .fetch_add(up_to_seq.saturating_sub(acked), Ordering::Relaxed);
                acked = acked.max(up_to_seq);
            }
            Some(IngestFrame::Error { reason }) => bail!("the ingest refused a batch: {reason}"),
            Some(other) => bail!("unexpected frame from the ingest: {other:?}"),
            None => return Ok(()),
        }
    }
}

/// The baseline: one frame per tick, the same bytes to every client.
struct Bare {
    frames: broadcast::Sender<ServerMessage>,
    format: FrameFormat,
    /// Frames are built while set.
    generating: AtomicBool,
    generated: AtomicU64,
}

impl Bare {
    fn new(format: FrameFormat) -> Bare {
        // A client more than two frames behind skips to the newest, as the
        // frontend conflates telemetry for a slow browser.
        let (frames, _) = broadcast::channel(2);
        Bare {
            frames,
            format,
            generating: AtomicBool::new(false),
            generated: AtomicU64::new(0),
        }
    }
}

/// Starts the bare broadcast server and its frame generator on their own
/// runtime, with as many threads as the frontend's.
async fn start_bare(
    rt: &NamedRuntime,
    bare: Arc<Bare>,
    topics: &[Topic],
    period: Duration,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = rt
        .handle()
        .spawn(tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)))
        .await??;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/ws", axum::routing::get(bare_upgrade))
        .with_state(bare.clone());
    let serve_stop = stop.clone();
    rt.handle().spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(serve_stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            eprintln!("bench fanout: the bare server failed: {e}");
        }
    });
    let topics: Vec<(TopicId, String)> = topics.iter().map(|t| (t.id.clone(), t.json.clone())).collect();
    rt.handle().spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut seq = 0u64;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            if !bare.generating.load(Ordering::Relaxed) {
                continue;
            }
            let now = unix_now(SystemTime::now());
            seq += 1;
            let id = StreamId::new((now * 1000.0) as u64, seq);
            let frame = match bare.format {
                FrameFormat::Json => {
                    let samples: Vec<String> = topics
                        .iter()
                        .map(|(topic, json)| {
                            meridian_proto::browser::sample_message(topic, id, now, now, now, json)
                        })
                        .collect();
                    let frame = meridian_proto::browser::batch_frame(samples.iter().map(String::as_str), &[]);
                    ServerMessage::Text(Utf8Bytes::from(frame))
                }
                FrameFormat::Msgpack => {
                    let samples: Vec<Vec<u8>> = topics
                        .iter()
                        .map(|(topic, json)| {
                            meridian_proto::msgpack::sample_message(topic, id, now, now, now, json).0
                        })
                        .collect();
                    let frame = meridian_proto::msgpack::batch_frame(samples.iter().map(Vec::as_slice), &[]);
                    ServerMessage::Binary(frame.into())
                }
            };
            let _ = bare.frames.send(frame);
            bare.generated.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok(addr)
}

/// The frontend's socket settings (manager/src/frontend/mod.rs `small`), so only the work differs.
async fn bare_upgrade(State(bare): State<Arc<Bare>>, ws: WebSocketUpgrade) -> axum::response::Response {
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(4 * meridian_proto::browser::MAX_CLIENT_MESSAGE_LEN)
        .on_upgrade(move |socket| bare_client(socket, bare.frames.subscribe()))
}

async fn bare_client(socket: WebSocket, mut frames: broadcast::Receiver<ServerMessage>) {
    let (mut sink, mut incoming) = socket.split();
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Ok(frame) => {
                    if sink.send(frame).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            message = incoming.next() => match message {
                Some(Ok(_)) => {}
                _ => break,
            },
        }
    }
}

/// Counters of the load generator, as it reports them (`stat …`).
#[derive(Debug, Clone, Copy, Default)]
struct ClientStat {
    samples: u64,
    frames: u64,
    bytes: u64,
    closed: u64,
}

/// Starts the load generator (`bench fanout-clients`). Its line protocol: it prints `ready
/// <connected> <failed>`, then answers `stat`, `begin` (start recording
/// lags) and `end` (stop) with `stat <samples> <frames> <bytes> <closed>
/// <errors>`, `end` also with `lags …`; `quit` ends it.
fn spawn_clients(
    url: &str,
    clients: usize,
    lag_clients: usize,
    subscribe: &[String],
    pin: bool,
    cores: usize,
) -> anyhow::Result<LoadGenerator> {
    let exe = std::env::current_exe().context("locating the meridian binary")?;
    let mut command = if pin && cores >= 2 {
        let mut c = std::process::Command::new("taskset");
        c.args(["-c", &(cores - 1).to_string()]).arg(exe);
        c
    } else {
        std::process::Command::new(exe)
    };
    command
        .args(["bench", "fanout-clients", "--url", url])
        .args(["--clients", &clients.to_string()])
        .args(["--lag-clients", &lag_clients.to_string()]);
    if !subscribe.is_empty() {
        command.arg("--subscribe").arg(subscribe.join(","));
    }
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "warn");
    }
    LoadGenerator::spawn(command, "meridian bench fanout-clients")
}

impl ClientStat {
    /// Sends `command` (`stat`, `begin`, `end`) and reads its `stat` line.
    async fn ask(
        clients: &mut LoadGenerator,
        command: &str,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<ClientStat> {
        let parts = clients.ask(command, Duration::from_secs(30), shutdown).await?;
        Ok(ClientStat {
            samples: field(&parts, 1)?,
            frames: field(&parts, 2)?,
            bytes: field(&parts, 3)?,
            closed: field(&parts, 4)?,
        })
    }
}

/// `lags <count>` then four series (total, three hops) of `p50 p99 max` in µs.
fn parse_lags(parts: &[String]) -> anyhow::Result<[Percentiles; 4]> {
    let count: usize = field(parts, 1)?;
    let mut out = [Percentiles::default(); 4];
    for (k, p) in out.iter_mut().enumerate() {
        let us = |j: usize| field::<u64>(parts, 2 + k * 3 + j).map(Duration::from_micros);
        *p = Percentiles {
            count,
            p50: us(0)?,
            p99: us(1)?,
            max: us(2)?,
        };
    }
    Ok(out)
}

// ---------------------------------------------------------------------
// The load generator (`meridian bench fanout-clients`).
// ---------------------------------------------------------------------

/// The load generator's counters, shared by its clients.
#[derive(Default)]
struct ClientTally {
    samples: AtomicU64,
    frames: AtomicU64,
    bytes: AtomicU64,
    closed: AtomicU64,
    errors: AtomicU64,
}

/// Lags recorded by the lag clients, seconds: total and the three hops.
#[derive(Default)]
struct Lags {
    recording: AtomicBool,
    values: Mutex<Vec<[f64; 4]>>,
}

/// Connects the clients, reports `ready`, then answers the bench's commands on stdin.
pub async fn run_clients(args: ClientsArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let requests: Arc<Vec<String>> = Arc::new(
        args.subscribe
            .iter()
            .map(|s| subscribe_request(s))
            .collect::<anyhow::Result<_>>()?,
    );
    let tally = Arc::new(ClientTally::default());
    let lags = Arc::new(Lags::default());
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let (go, go_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Step>();
    for i in 0..args.clients {
        tokio::spawn(client(
            args.url.clone(),
            requests.clone(),
            (i < args.lag_clients).then(|| lags.clone()),
            tally.clone(),
            gate.clone(),
            go_rx.clone(),
            ready_tx.clone(),
        ));
    }
    drop(ready_tx);
    let mut commands = commands();
    // Connected (idle, nothing subscribed), then, when asked, subscribed.
    let (connected, failed) = count_steps(&mut ready_rx, args.clients, Step::Connected).await;
    println!("connected {connected} {failed}");
    match commands.recv().await.as_deref() {
        Some("subscribe") => {}
        _ => return Ok(()),
    }
    let _ = go.send(true);
    let (ok, failed_now) = count_steps(&mut ready_rx, connected, Step::Subscribed).await;
    println!("ready {ok} {}", failed + failed_now);

    let recording = Recording {
        tally: &tally,
        lags: &lags,
    };
    serve(&mut commands, &recording, "bench fanout-clients", &shutdown).await;
    Ok(())
}

/// The load generator's answers: its counters and the lags recorded.
struct Recording<'a> {
    tally: &'a ClientTally,
    lags: &'a Lags,
}

impl Recorder for Recording<'_> {
    fn stat(&self) -> String {
        let tally = self.tally;
        format!(
            "stat {} {} {} {} {}",
            tally.samples.load(Ordering::Relaxed),
            tally.frames.load(Ordering::Relaxed),
            tally.bytes.load(Ordering::Relaxed),
            tally.closed.load(Ordering::Relaxed),
            tally.errors.load(Ordering::Relaxed),
        )
    }

    fn begin(&self) {
        self.lags.values.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.lags.recording.store(true, Ordering::Relaxed);
    }

    fn stop(&self) {
        self.lags.recording.store(false, Ordering::Relaxed);
    }

    fn lags(&self) -> String {
        let values = std::mem::take(&mut *self.lags.values.lock().unwrap_or_else(|p| p.into_inner()));
        lag_line(&values)
    }
}

/// How far a client got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Connected,
    Subscribed,
    Failed,
}

/// Waits for `expected` clients to report `step` or failure; (reached, failed).
async fn count_steps(
    steps: &mut mpsc::UnboundedReceiver<Step>,
    expected: usize,
    step: Step,
) -> (usize, usize) {
    let (mut ok, mut failed) = (0, 0);
    while ok + failed < expected {
        match steps.recv().await {
            Some(s) if s == step => ok += 1,
            Some(Step::Failed) => failed += 1,
            Some(_) => {}
            None => break,
        }
    }
    (ok, failed)
}

/// The native protocol's subscribe request for `CSC:INDEX/topic` (telemetry).
fn subscribe_request(spec: &str) -> anyhow::Result<String> {
    let (csc, topic) = spec
        .split_once('/')
        .context("--subscribe: expected CSC:INDEX/topic")?;
    let id: CscId = csc.parse().with_context(|| format!("--subscribe: {csc}"))?;
    let topic = TopicId::new(id, Category::Telemetry, topic)?;
    Ok(format!(
        r#"{{"op":"subscribe","csc":"{}","salindex":{},"category":"telemetry","topic":"{}"}}"#,
        topic.csc.csc, topic.csc.salindex, topic.topic
    ))
}

fn lag_line(values: &[[f64; 4]]) -> String {
    let mut out = format!("lags {}", values.len());
    for k in 0..4 {
        let series = values
            .iter()
            .map(|v| Duration::from_secs_f64(v[k].max(0.0)))
            .collect();
        let p = Percentiles::of(series);
        for d in [p.p50, p.p99, p.max] {
            out.push_str(&format!(" {}", d.as_micros()));
        }
    }
    out
}

/// One browser: connect, wait for the go, subscribe, say when every
/// subscription is confirmed, then count (and, for a lag client, time)
/// every sample.
async fn client(
    url: String,
    requests: Arc<Vec<String>>,
    lags: Option<Arc<Lags>>,
    tally: Arc<ClientTally>,
    gate: Arc<Semaphore>,
    mut go: tokio::sync::watch::Receiver<bool>,
    ready: mpsc::UnboundedSender<Step>,
) {
    static FIRST_ERROR: std::sync::Once = std::sync::Once::new();
    let report = |what: String| FIRST_ERROR.call_once(|| eprintln!("bench fanout-clients: {what}"));
    let fail = || {
        let _ = ready.send(Step::Failed);
    };
    let Ok(permit) = gate.clone().acquire_owned().await else {
        return fail();
    };
    let config =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024);
    let connected = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true),
    )
    .await;
    drop(permit);
    let ws = match connected {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            report(format!("connecting to {url}: {e}"));
            return fail();
        }
        Err(_) => {
            report(format!("connecting to {url}: no answer within 30 s"));
            return fail();
        }
    };
    let _ = ready.send(Step::Connected);
    if go.wait_for(|go| *go).await.is_err() {
        return;
    }
    let Ok(permit) = gate.acquire_owned().await else {
        return fail();
    };
    let (mut sink, mut incoming) = ws.split();
    for request in requests.iter() {
        if sink.feed(Message::Text(request.as_str().into())).await.is_err() {
            return fail();
        }
    }
    if sink.flush().await.is_err() {
        return fail();
    }
    let mut permit = Some(permit);
    let mut subscribed = 0;
    if requests.is_empty() {
        permit = None;
        let _ = ready.send(Step::Subscribed);
    }
    let mut local = Vec::new();
    while let Some(message) = incoming.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Binary(frame)) => {
                // Binary frames are only batches (docs/protocol.md).
                tally.frames.fetch_add(1, Ordering::Relaxed);
                tally.bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
                let count = match &lags {
                    Some(lags) if lags.recording.load(Ordering::Relaxed) => {
                        local.clear();
                        time_binary_samples(&frame, unix_now(SystemTime::now()), &mut local);
                        lags.values
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .extend_from_slice(&local);
                        local.len()
                    }
                    _ => binary_batch_len(&frame).unwrap_or(0),
                };
                tally.samples.fetch_add(count as u64, Ordering::Relaxed);
                continue;
            }
            Ok(Message::Close(frame)) => {
                tally.closed.fetch_add(1, Ordering::Relaxed);
                report(format!("the server closed a client: {frame:?}"));
                break;
            }
            Ok(_) => continue,
            Err(e) => {
                tally.closed.fetch_add(1, Ordering::Relaxed);
                report(format!("a client's connection failed: {e}"));
                break;
            }
        };
        let text = text.as_str();
        if text.starts_with(r#"{"type":"batch""#) {
            tally.frames.fetch_add(1, Ordering::Relaxed);
            tally.bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
            let count = match &lags {
                Some(lags) if lags.recording.load(Ordering::Relaxed) => {
                    local.clear();
                    time_samples(text, unix_now(SystemTime::now()), &mut local);
                    lags.values
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&local);
                    local.len()
                }
                _ => text.matches(SAMPLE_MARKER).count(),
            };
            tally.samples.fetch_add(count as u64, Ordering::Relaxed);
        } else if text.starts_with(r#"{"type":"subscribed""#) {
            subscribed += 1;
            if subscribed == requests.len() && permit.take().is_some() {
                let _ = ready.send(Step::Subscribed);
            }
        } else if text.starts_with(r#"{"type":"error""#) {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            report(format!("the server answered: {text}"));
        }
    }
    if permit.is_some() {
        fail();
    }
    drop(sink);
}

/// Appends, for each sample of a batch frame received at `now`, its lag and
/// the hops from its `source_ts`, `ingest_ts` and `frontend_ts` (seconds).
fn time_samples(frame: &str, now: f64, out: &mut Vec<[f64; 4]>) {
    let mut rest = frame;
    while let Some(at) = rest.find(SAMPLE_MARKER) {
        rest = &rest[at + SAMPLE_MARKER.len()..];
        let Some((lags, after)) = hops(rest, now) else {
            continue;
        };
        rest = after;
        out.push(lags);
    }
}

/// [`time_samples`] for a MessagePack batch frame.
fn time_binary_samples(frame: &[u8], now: f64, out: &mut Vec<[f64; 4]>) {
    let Ok(batch) = meridian_proto::msgpack::decode(frame) else {
        return;
    };
    for sample in batch
        .get("samples")
        .and_then(|s| s.as_array())
        .unwrap_or_default()
    {
        let time = |key| sample.get(key).and_then(|v| v.as_f64());
        if let (Some(source), Some(ingest), Some(frontend)) =
            (time("source_ts"), time("ingest_ts"), time("frontend_ts"))
        {
            out.push([now - source, ingest - source, frontend - ingest, now - frontend]);
        }
    }
}

/// The number of samples of a MessagePack batch frame, read from its
/// header without decoding the samples: the frame is the map
/// `{"type":"batch","samples":[…],…}` written in that order.
fn binary_batch_len(frame: &[u8]) -> Option<usize> {
    const HEAD: &[u8] = b"\x83\xa4type\xa5batch\xa7samples";
    let rest = frame.strip_prefix(HEAD)?;
    match *rest.first()? {
        b @ 0x90..=0x9f => Some((b & 0x0f) as usize),
        0xdc => Some(u16::from_be_bytes([*rest.get(1)?, *rest.get(2)?]) as usize),
        0xdd => Some(u32::from_be_bytes(rest.get(1..5)?.try_into().ok()?) as usize),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_of_a_batch_frame_are_timed_per_hop() {
        let topic = TopicId::new(CscId::new(CSC, 1).unwrap(), Category::Telemetry, "gyroData").unwrap();
        let a = meridian_proto::browser::sample_message(
            &topic,
            StreamId::new(1, 0),
            10.0,
            10.5,
            11.0,
            "{\"x\":1}",
        );
        let b = meridian_proto::browser::sample_message(&topic, StreamId::new(2, 0), 20.0, 20.25, 20.5, "{}");
        let frame = meridian_proto::browser::batch_frame([a.as_str(), b.as_str()].into_iter(), &[]);
        let mut out = Vec::new();
        time_samples(&frame, 21.0, &mut out);
        assert_eq!(out, [[11.0, 0.5, 0.5, 10.0], [1.0, 0.25, 0.25, 0.5]]);
        assert_eq!(frame.matches(SAMPLE_MARKER).count(), 2);
    }

    #[test]
    fn binary_batch_frames_are_counted_from_their_header_and_timed_per_hop() {
        let topic = TopicId::new(CscId::new(CSC, 1).unwrap(), Category::Telemetry, "gyroData").unwrap();
        for n in [0, 1, 15, 16, 300] {
            let samples: Vec<Vec<u8>> = (0..n)
                .map(|i| {
                    let t = 10.0 + i as f64;
                    meridian_proto::msgpack::sample_message(
                        &topic,
                        StreamId::new(1, i),
                        t,
                        t + 0.5,
                        t + 1.0,
                        "{}",
                    )
                    .0
                })
                .collect();
            let frame = meridian_proto::msgpack::batch_frame(samples.iter().map(Vec::as_slice), &[]);
            assert_eq!(binary_batch_len(&frame), Some(n as usize));
            let mut out = Vec::new();
            time_binary_samples(&frame, 20.0, &mut out);
            assert_eq!(out.len(), n as usize);
            if n > 0 {
                assert_eq!(out[0], [10.0, 0.5, 0.5, 9.0]);
            }
        }
        assert_eq!(binary_batch_len(b"\x81\xa4type"), None);
    }

    #[test]
    fn the_plan_spreads_m1m3_topics_over_instances() {
        let topics = plan(50).unwrap();
        assert_eq!(topics.len(), 50);
        let instances: std::collections::HashSet<u32> = topics.iter().map(|t| t.id.csc.salindex).collect();
        assert!(instances.len() > 1 && instances.contains(&1));
        assert!(topics.iter().all(|t| t.json.starts_with('{')));
        // The request parses as the frontend parses it.
        let request = subscribe_request(&format!("{}/{}", topics[0].id.csc, topics[0].id.topic)).unwrap();
        assert!(matches!(
            meridian_proto::browser::ClientRequest::parse(&request),
            Ok(meridian_proto::browser::ClientRequest::Subscribe(_))
        ));
    }
}
