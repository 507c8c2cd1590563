//! `meridian bench love`: the replaced system's approach (LOVE's manager: a
//! Django Channels consumer relaying through channels_redis) and Meridian's
//! frontend, side by side on the same load in the same run.
//!
//! Both servers get the same thing: LOVE producer connections
//! (`/manager/ws/subscription/?password=…`, one per MTM1M3 instance) sending
//! the simulator's MTM1M3 telemetry wrapped as LOVE's producers wrap it, one
//! message per topic at `--rate` Hz, and N LOVE browsers (`?token=`, a
//! second process) each subscribed to every topic's group. What is compared
//! is what a site moving from LOVE would see: data messages delivered per
//! second, per server core, and producer → browser lag.
//!
//! - django-channels: `bench/love/` (our relay, written from LOVE's protocol
//!   facts; see its consumers.py) run as ONE daphne process, as one LOVE
//!   manager pod runs, against the bench's private redis-server. Its venv
//!   comes from `bench/love/setup` (PyPI, exact pins).
//! - meridian: `meridian manager --role frontend` as a subprocess (the same
//!   binary), whose LOVE endpoint writes producer messages to the store
//!   (Redis streams) and fans them out from there, as in production.
//!
//! Each is a separate process started fresh for its run, so its CPU and RSS
//! are read from `/proc/<pid>` the same way; redis-server's CPU is reported
//! apart. The load (producers here, browsers in their own process) is not
//! counted for either server, but shares the machine's cores with them.

use super::clients::{ensure_fds, field, reap, LoadGenerator};
use super::love_load::{plan, start_producers, Flow, Topic, CSC};
use super::measure::{process_cpu, Percentiles};
use super::redis_server::{free_port, require_tools, RedisServer};
use super::{interrupted, sleep_unless};
use anyhow::{bail, Context};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The browsers' token and the producers' password on both servers.
const TOKEN: &str = "bench-token";
const PASSWORD: &str = "bench-pass";

/// Data flows this long before the measurement window opens.
const WARMUP: Duration = Duration::from_secs(2);

/// Longest wait for a server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for the load generator to answer a command.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// File descriptors kept for everything but the client connections.
const SPARE_FDS: u64 = 256;

#[derive(Args, Debug, Clone)]
pub struct LoveArgs {
    /// Client counts to measure, one run per server each.
    #[arg(long, value_delimiter = ',', default_value = "100,1000", value_name = "N")]
    clients: Vec<usize>,
    /// Telemetry topics every client subscribes to (MTM1M3's 50 Hz topics over instances 1, 2, …).
    #[arg(long, default_value_t = 10, value_name = "T")]
    topics: usize,
    /// Messages per second of each topic. The default stays under one per
    /// frontend tick, so Meridian conflates nothing and counts compare like for like.
    #[arg(long, default_value_t = 10.0, value_name = "HZ")]
    rate: f64,
    /// Seconds of each measurement window (after a 2 s warm-up).
    #[arg(long, default_value_t = 10.0, value_name = "S")]
    duration: f64,
    /// Clients that time every message for the lag figures (the others only count).
    #[arg(long, default_value_t = 20, value_name = "K")]
    lag_clients: usize,
    /// Worker threads of Meridian's frontend (TOKIO_WORKER_THREADS); daphne runs one Python process.
    #[arg(long, default_value_t = 1, value_name = "THREADS")]
    frontend_threads: usize,
    /// channels_redis capacity of the relay (LOVE's chart default 100).
    #[arg(long, default_value_t = 100)]
    capacity: u32,
    /// channels_redis expiry of the relay in seconds (LOVE's summit value 5).
    #[arg(long, default_value_t = 5)]
    expiry: u32,
    /// Servers to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "django-channels,meridian")]
    servers: Vec<String>,
    /// The relay's directory (with `setup`, `requirements.txt`, `lovebench/`).
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/love"))]
    love_dir: PathBuf,
    /// Also write the rows as JSON here (read by `bench all`).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

/// Which server a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    Django,
    Meridian,
}

impl Server {
    fn parse(name: &str) -> anyhow::Result<Server> {
        match name {
            "django-channels" => Ok(Server::Django),
            "meridian" => Ok(Server::Meridian),
            _ => bail!("--servers: {name:?} is not one of django-channels, meridian"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Server::Django => "django-channels",
            Server::Meridian => "meridian",
        }
    }
}

/// The figures of one run, as the JSON row says them.
#[derive(Debug, Clone)]
struct Row {
    server: Server,
    clients: usize,
    topics: usize,
    rate_hz: f64,
    /// Data messages per second the clients would get if all were delivered.
    offered_per_s: f64,
    delivered_per_s: f64,
    /// The server process's CPU over the window, in cores (redis-server not included).
    server_cores: f64,
    redis_cores: f64,
    lag: Percentiles,
    server_rss_mib: f64,
    note: String,
}

impl Row {
    fn per_core(&self) -> f64 {
        if self.server_cores > 0.0 {
            self.delivered_per_s / self.server_cores
        } else {
            0.0
        }
    }

    fn json(&self) -> serde_json::Value {
        let ms = |d: Duration| round(d.as_secs_f64() * 1e3, 3);
        serde_json::json!({
            "server": self.server.name(),
            "clients": self.clients,
            "topics": self.topics,
            "rate_hz": self.rate_hz,
            "offered_per_s": round(self.offered_per_s, 1),
            "delivered_per_s": round(self.delivered_per_s, 1),
            "server_cores": round(self.server_cores, 3),
            "per_core": round(self.per_core(), 1),
            "lag_p50_ms": ms(self.lag.p50),
            "lag_p99_ms": ms(self.lag.p99),
            "lag_max_ms": ms(self.lag.max),
            "server_rss_mib": round(self.server_rss_mib, 1),
            "note": self.note,
        })
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let k = 10f64.powi(digits);
    if x.is_finite() {
        (x * k).round() / k
    } else {
        0.0
    }
}

/// The whole JSON document `--json` writes.
fn report_json(rows: &[Row], versions: &serde_json::Value, machine: &str) -> serde_json::Value {
    serde_json::json!({
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "versions": versions,
        "machine": machine,
    })
}

pub async fn run(args: LoveArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let servers = check_args(&args)?;
    require_tools()?;
    let started = Instant::now();
    let venv = tokio::task::block_in_place(|| setup_venv(&args.love_dir))?;
    let versions = tokio::task::block_in_place(|| relay_versions(&venv))?;
    let topics = Arc::new(plan(args.topics)?);
    let redis = tokio::task::block_in_place(RedisServer::start)?;
    let machine = machine();
    let tick_ms = meridian_config::Config::default().frontend.tick_ms;
    let mean = topics.iter().map(|t| t.payload.len()).sum::<usize>() / topics.len();
    let instances = topics.last().map_or(0, |t| t.salindex);
    println!(
        "meridian bench love: {} topics of {CSC} telemetry at {} Hz from {instances} LOVE producer connection(s) \
         (mean payload {mean} B), every client subscribed to all; one message per sample per client on both servers",
        topics.len(),
        args.rate,
    );
    println!(
        "django-channels: one daphne process, channels_redis capacity {} expiry {} s ({}); meridian: \
         `manager --role frontend`, {} worker thread(s), frontend.tick_ms {tick_ms} ({}); redis-server {} (CPU reported apart)",
        args.capacity,
        args.expiry,
        versions_line(&versions),
        args.frontend_threads,
        if args.rate * tick_ms as f64 <= 1000.0 {
            "at this rate Meridian conflates nothing: counts compare like for like"
        } else {
            "faster than one sample per tick: Meridian conflates telemetry, delivered counts are not like for like"
        },
        redis.version,
    );
    println!("machine: {machine}");

    let mut rows = Vec::new();
    let runs = args.clients.len() * servers.len();
    let mut k = 0;
    for &n in &args.clients {
        ensure_fds(2 * n as u64 + SPARE_FDS).map_err(|e| anyhow::anyhow!("{n} clients: {e}"))?;
        for &server in &servers {
            k += 1;
            let label = format!("[{k}/{runs}] {n} clients, {}", server.name());
            interrupted(&shutdown)?;
            redis.flush()?;
            let ctx = RunContext {
                args: &args,
                redis: &redis,
                venv: &venv,
                topics: &topics,
                label,
            };
            let row = measure(&ctx, server, n, &shutdown).await?;
            eprintln!(
                "{}: {:.0} delivered/s of {:.0} offered, {:.2} server cores, p99 {:.1} ms",
                ctx.label,
                row.delivered_per_s,
                row.offered_per_s,
                row.server_cores,
                row.lag.p99.as_secs_f64() * 1e3
            );
            rows.push(row);
        }
    }
    print_table(&rows);
    println!("total {:.0} s", started.elapsed().as_secs_f64());
    if let Some(path) = &args.json {
        let doc = report_json(&rows, &versions, &machine);
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn check_args(args: &LoveArgs) -> anyhow::Result<Vec<Server>> {
    if args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--clients: give client counts of at least 1, e.g. 100,1000");
    }
    if args.topics == 0 || args.topics > 1000 {
        bail!("--topics must be in 1..=1000");
    }
    if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 1000.0) {
        bail!("--rate must be in (0, 1000] Hz");
    }
    if !(args.duration.is_finite() && args.duration >= 1.0 && args.duration <= 3600.0) {
        bail!("--duration must be in [1, 3600] s");
    }
    if args.frontend_threads == 0 || args.frontend_threads > 64 {
        bail!("--frontend-threads must be in 1..=64");
    }
    if args.capacity == 0 || args.expiry == 0 {
        bail!("--capacity and --expiry must be at least 1");
    }
    let servers = args
        .servers
        .iter()
        .map(|s| Server::parse(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if servers.is_empty() {
        bail!("--servers: name at least one of django-channels, meridian");
    }
    Ok(servers)
}

/// Runs `bench/love/setup` (creates or reuses the venv); the venv's path.
fn setup_venv(love_dir: &Path) -> anyhow::Result<PathBuf> {
    let setup = love_dir.join("setup");
    if !setup.exists() {
        bail!(
            "{} not found: run from the repository or give --love-dir",
            setup.display()
        );
    }
    let started = Instant::now();
    let out = Command::new("sh")
        .arg(&setup)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", setup.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): see its message above",
            setup.display(),
            out.status
        );
    }
    let venv = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    if venv.is_empty() {
        bail!("{} printed no venv path", setup.display());
    }
    eprintln!(
        "bench love: relay venv {venv} ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(PathBuf::from(venv))
}

/// The versions the relay runs with, read from the venv itself.
fn relay_versions(venv: &Path) -> anyhow::Result<serde_json::Value> {
    let script = "import json, django, channels, channels_redis, daphne; print(json.dumps({'django': django.__version__, \
                  'channels': channels.__version__, 'channels_redis': channels_redis.__version__, \
                  'daphne': daphne.__version__}))";
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .output()
        .context("asking the relay venv for its versions")?;
    if !out.status.success() {
        bail!(
            "the relay venv cannot import its packages: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("the relay venv's versions")
}

fn versions_line(v: &serde_json::Value) -> String {
    ["django", "channels", "channels_redis", "daphne"]
        .iter()
        .map(|k| format!("{k} {}", v[k].as_str().unwrap_or("?")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Cores, CPU model and load average, for the report.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "{cores} cores, {model}, load average {} before the run",
        load.join(" ")
    )
}

/// Everything a run reads but does not own.
struct RunContext<'a> {
    args: &'a LoveArgs,
    redis: &'a RedisServer,
    venv: &'a Path,
    topics: &'a Arc<Vec<Topic>>,
    label: String,
}

/// One run: a fresh server, its producers and clients, warm-up, the window.
async fn measure(
    ctx: &RunContext<'_>,
    server: Server,
    n: usize,
    shutdown: &CancellationToken,
) -> anyhow::Result<Row> {
    let args = ctx.args;
    let mut process = ServerProcess::start(server, ctx, shutdown).await?;
    let base = format!("ws://127.0.0.1:{}/manager/ws/subscription/", process.port);
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    let flow = Arc::new(Flow::default());
    let producers = start_producers(
        &format!("{base}?password={PASSWORD}"),
        ctx.topics,
        args.rate,
        flow.clone(),
        stop.clone(),
    )
    .await
    .with_context(|| format!("{}: {}", ctx.label, process.log_tail()))?;

    let groups: Vec<String> = ctx.topics.iter().map(Topic::group).collect();
    let connect_started = Instant::now();
    let mut clients = spawn_clients(
        &format!("{base}?token={TOKEN}"),
        n,
        args.lag_clients.min(n),
        &groups,
    )?;
    let timeout = START_TIMEOUT + Duration::from_millis(20 * (n * groups.len()) as u64);
    let ready = clients.expect("ready", timeout, shutdown).await?;
    let (ok, failed): (usize, usize) = (field(&ready, 1)?, field(&ready, 2)?);
    if ok < n {
        bail!(
            "{}: only {ok} of {n} clients subscribed ({failed} failed; see the load generator's errors above); {}",
            ctx.label,
            process.log_tail()
        );
    }
    eprintln!(
        "{}: {n} clients connected and subscribed to {} groups in {:.1} s ({producers} producers)",
        ctx.label,
        groups.len(),
        connect_started.elapsed().as_secs_f64()
    );

    flow.sending.store(true, Ordering::Relaxed);
    sleep_unless(WARMUP, shutdown).await?;
    let stat0 = ClientStat::ask(&mut clients, "begin", shutdown).await?;
    let (t0, cpu0, redis0, sent0, load0) = (
        Instant::now(),
        process_cpu(process.pid()),
        process_cpu(ctx.redis.pid()),
        flow.sent.load(Ordering::Relaxed),
        process_cpu(clients.pid()),
    );
    let window = Duration::from_secs_f64(args.duration);
    let mut rss_max = rss_mib(process.pid());
    let mut last = (stat0, cpu0, t0, load0);
    while t0.elapsed() + Duration::from_secs(1) < window {
        sleep_unless(Duration::from_secs(1), shutdown).await?;
        let now = (
            ClientStat::ask(&mut clients, "stat", shutdown).await?,
            process_cpu(process.pid()),
            Instant::now(),
            process_cpu(clients.pid()),
        );
        rss_max = rss_max.max(rss_mib(process.pid()));
        let secs = (now.2 - last.2).as_secs_f64().max(1e-3);
        eprintln!(
            "{}: {:.0}/{:.0} s: {:.0} messages/s delivered, server {:.0}% of a core, RSS {:.0} MiB, clients {:.0}%",
            ctx.label,
            t0.elapsed().as_secs_f64(),
            window.as_secs_f64(),
            (now.0.messages - last.0.messages) as f64 / secs,
            (now.1.saturating_sub(last.1)).as_secs_f64() * 100.0 / secs,
            rss_max,
            (now.3.saturating_sub(last.3)).as_secs_f64() * 100.0 / secs,
        );
        if process.exited() {
            bail!(
                "{}: the server exited during the run; {}",
                ctx.label,
                process.log_tail()
            );
        }
        last = now;
    }
    sleep_unless(window.saturating_sub(t0.elapsed()), shutdown).await?;
    let stat1 = ClientStat::ask(&mut clients, "end", shutdown).await?;
    let (t1, cpu1, redis1, sent1, load1) = (
        Instant::now(),
        process_cpu(process.pid()),
        process_cpu(ctx.redis.pid()),
        flow.sent.load(Ordering::Relaxed),
        process_cpu(clients.pid()),
    );
    rss_max = rss_max.max(rss_mib(process.pid()));
    let lags = clients.expect("lags", ANSWER_TIMEOUT, shutdown).await?;
    flow.sending.store(false, Ordering::Relaxed);
    stop.cancel();
    clients.quit().await;
    let server_log = process.log_tail();
    process.stop().await;

    let wall = (t1 - t0).as_secs_f64();
    let lag = Percentiles {
        count: field(&lags, 1)?,
        p50: Duration::from_micros(field(&lags, 2)?),
        p99: Duration::from_micros(field(&lags, 3)?),
        max: Duration::from_micros(field(&lags, 4)?),
    };
    let offered_per_s = (sent1 - sent0) as f64 * n as f64 / wall;
    let delivered_per_s = (stat1.messages - stat0.messages) as f64 / wall;
    let redis_cores = redis1.saturating_sub(redis0).as_secs_f64() / wall;
    let load_cores = load1.saturating_sub(load0).as_secs_f64() / wall;
    let mut note =
        format!("redis-server {redis_cores:.2} cores, load generator's clients {load_cores:.2} cores");
    let nominal = ctx.topics.len() as f64 * args.rate;
    let produced = (sent1 - sent0) as f64 / wall;
    if produced < 0.95 * nominal {
        note.push_str(&format!(
            "; producers sent {produced:.0} of {nominal:.0} messages/s (the server read them slower)"
        ));
    }
    if offered_per_s > 0.0 && delivered_per_s < 0.95 * offered_per_s {
        note.push_str(&format!(
            "; saturated: delivered {:.0}% of offered",
            100.0 * delivered_per_s / offered_per_s
        ));
    }
    let lost = stat1.closed > stat0.closed || flow.closed.load(Ordering::Relaxed) > 0;
    if lost {
        eprintln!(
            "{}: connections were lost; the server's {}",
            ctx.label, server_log
        );
    }
    if lost {
        note.push_str(&format!(
            "; {} clients lost their connection, producers {} times (they reconnect after 3 s)",
            stat1.closed - stat0.closed,
            flow.closed.load(Ordering::Relaxed)
        ));
    }
    if lag.count == 0 {
        note.push_str("; no message reached a lag client in the window");
    }
    let dropped: u64 = field(&lags, 5)?;
    if dropped > 0 {
        note.push_str(&format!(
            "; {dropped} lag values beyond the bench's bound not kept"
        ));
    }
    if server == Server::Django {
        note.push_str(&format!(
            "; channels_redis capacity {} expiry {} s",
            args.capacity, args.expiry
        ));
    }
    Ok(Row {
        server,
        clients: n,
        topics: ctx.topics.len(),
        rate_hz: args.rate,
        offered_per_s,
        delivered_per_s,
        server_cores: cpu1.saturating_sub(cpu0).as_secs_f64() / wall,
        redis_cores,
        lag,
        server_rss_mib: rss_max,
        note,
    })
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| clients | server | offered msg/s | delivered msg/s | of offered | server cores | msg/s per core | lag p50 / p99 / max (ms) | server RSS MiB | redis cores |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---|---:|---:|");
    for r in rows {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let lag = if r.lag.count == 0 {
            "no messages".to_string()
        } else {
            format!(
                "{:.1} / {:.1} / {:.1}",
                ms(r.lag.p50),
                ms(r.lag.p99),
                ms(r.lag.max)
            )
        };
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.1}% | {:.2} | {:.0} | {lag} | {:.0} | {:.2} |",
            r.clients,
            r.server.name(),
            r.offered_per_s,
            r.delivered_per_s,
            if r.offered_per_s > 0.0 {
                100.0 * r.delivered_per_s / r.offered_per_s
            } else {
                0.0
            },
            r.server_cores,
            r.per_core(),
            r.server_rss_mib,
            r.redis_cores,
        );
    }
    for pair in rows.chunks(2) {
        if let [a, b] = pair {
            if a.clients == b.clients && a.server != b.server && a.per_core() > 0.0 {
                let (d, m) = if a.server == Server::Django {
                    (a, b)
                } else {
                    (b, a)
                };
                println!(
                    "{} clients: meridian delivers {:.1}× the messages per core of django-channels ({:.1}× the messages)",
                    a.clients,
                    m.per_core() / d.per_core().max(1e-9),
                    m.delivered_per_s / d.delivered_per_s.max(1e-9),
                );
            }
        }
    }
}

// ---------------------------------------------------------------------
// The servers under test.
// ---------------------------------------------------------------------

/// A server process started for one run; killed when dropped.
struct ServerProcess {
    child: Child,
    port: u16,
    log: PathBuf,
    /// Meridian's configuration file, removed with the process.
    config: Option<PathBuf>,
}

impl ServerProcess {
    /// Starts `server` on a free port and waits until it accepts connections.
    async fn start(
        server: Server,
        ctx: &RunContext<'_>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<ServerProcess> {
        let port = free_port()?;
        let log = ctx.redis.dir().join(format!("{}-{port}.log", server.name()));
        let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut config = None;
        let mut command = match server {
            Server::Django => {
                let mut c = Command::new(ctx.venv.join("bin/daphne"));
                c.current_dir(&ctx.args.love_dir)
                    .args(["-v", "0", "-b", "127.0.0.1", "-p", &port.to_string()])
                    .arg("lovebench.asgi:application")
                    .env("LOVEBENCH_REDIS_URL", format!("{}0", ctx.redis.url()))
                    .env("LOVEBENCH_PASSWORD", PASSWORD)
                    .env("LOVEBENCH_TOKENS", TOKEN)
                    .env("LOVEBENCH_CAPACITY", ctx.args.capacity.to_string())
                    .env("LOVEBENCH_EXPIRY", ctx.args.expiry.to_string());
                c
            }
            Server::Meridian => {
                let path = ctx.redis.dir().join(format!("meridian-{port}.toml"));
                std::fs::write(&path, meridian_config(&ctx.redis.url(), port))
                    .with_context(|| format!("writing {}", path.display()))?;
                let mut c = Command::new(std::env::current_exe().context("locating the meridian binary")?);
                c.arg("--config")
                    .arg(&path)
                    .args(["manager", "--role", "frontend"])
                    .env("TOKIO_WORKER_THREADS", ctx.args.frontend_threads.to_string())
                    .env(
                        "RUST_LOG",
                        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
                    );
                config = Some(path);
                c
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", server.name()))?;
        let mut process = ServerProcess {
            child,
            port,
            log,
            config,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(process);
            }
            if process.exited() {
                bail!("{} exited at start; {}", server.name(), process.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen on port {port} within {START_TIMEOUT:?}; {}",
                    server.name(),
                    process.log_tail()
                );
            }
            sleep_unless(Duration::from_millis(50), shutdown).await?;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The end of its log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join("\n");
        format!("its log ({}) ends:\n{tail}", self.log.display())
    }

    /// SIGTERM, then SIGKILL if it has not exited within 5 s.
    async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !self.exited() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        reap(&mut self.child);
        if let Some(path) = &self.config {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The frontend under test: Redis store, LOVE producers admitted with the password.
fn meridian_config(redis_url: &str, port: u16) -> String {
    format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{redis_url}\"\n\n[frontend]\nlisten = \"127.0.0.1:{port}\"\n\
         tokens = [\"{TOKEN}\"]\nlove_password = \"{PASSWORD}\"\n"
    )
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

// ---------------------------------------------------------------------
// The load generator process (`meridian bench love-clients`).
// ---------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default)]
struct ClientStat {
    messages: u64,
    closed: u64,
}

fn spawn_clients(
    url: &str,
    clients: usize,
    lag_clients: usize,
    groups: &[String],
) -> anyhow::Result<LoadGenerator> {
    let exe = std::env::current_exe().context("locating the meridian binary")?;
    let mut command = Command::new(exe);
    command
        .args(["bench", "love-clients", "--url", url])
        .args(["--clients", &clients.to_string()])
        .args(["--lag-clients", &lag_clients.to_string()])
        .arg("--subscribe")
        .arg(groups.join(","))
        .env("RUST_LOG", "warn");
    LoadGenerator::spawn(command, "meridian bench love-clients")
}

impl ClientStat {
    /// Sends `command` (`stat`, `begin`, `end`) and reads its `stat` line.
    async fn ask(
        clients: &mut LoadGenerator,
        command: &str,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<ClientStat> {
        let parts = clients.ask(command, ANSWER_TIMEOUT, shutdown).await?;
        Ok(ClientStat {
            messages: field(&parts, 1)?,
            closed: field(&parts, 2)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(server: Server) -> Row {
        Row {
            server,
            clients: 100,
            topics: 10,
            rate_hz: 10.0,
            offered_per_s: 10_000.0,
            delivered_per_s: 8_000.0,
            server_cores: 0.5,
            redis_cores: 0.1,
            lag: Percentiles {
                count: 10,
                p50: Duration::from_micros(1500),
                p99: Duration::from_millis(20),
                max: Duration::from_millis(31),
            },
            server_rss_mib: 64.04,
            note: "n".into(),
        }
    }

    #[test]
    fn json_has_exactly_the_shape_bench_all_reads() {
        let versions = serde_json::json!({"django":"5.2.19","channels":"4.3.2","channels_redis":"4.3.0","daphne":"4.2.3"});
        let doc = report_json(
            &[row(Server::Django), row(Server::Meridian)],
            &versions,
            "2 cores",
        );
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&doc), ["machine", "rows", "versions"]);
        assert_eq!(
            keys(&doc["versions"]),
            ["channels", "channels_redis", "daphne", "django"]
        );
        let rows = doc["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        let mut expected = [
            "server",
            "clients",
            "topics",
            "rate_hz",
            "offered_per_s",
            "delivered_per_s",
            "server_cores",
            "per_core",
            "lag_p50_ms",
            "lag_p99_ms",
            "lag_max_ms",
            "server_rss_mib",
            "note",
        ];
        expected.sort();
        assert_eq!(keys(&rows[0]), expected);
        assert_eq!(rows[0]["server"], "django-channels");
        assert_eq!(rows[1]["server"], "meridian");
        assert_eq!(rows[0]["clients"], 100);
        assert_eq!(rows[0]["per_core"], 16_000.0);
        assert_eq!(rows[0]["lag_p50_ms"], 1.5);
        assert_eq!(rows[0]["lag_p99_ms"], 20.0);
        assert_eq!(rows[0]["server_rss_mib"], 64.0);
        assert_eq!(doc["machine"], "2 cores");
    }

    #[test]
    fn an_idle_server_has_no_per_core_figure_rather_than_infinity() {
        let mut r = row(Server::Meridian);
        r.server_cores = 0.0;
        assert_eq!(r.per_core(), 0.0);
        assert_eq!(r.json()["per_core"], 0.0);
    }

    #[test]
    fn meridian_config_is_valid_and_admits_love_producers() {
        let text = meridian_config("redis://127.0.0.1:7000/", 4321);
        let config: meridian_config::Config = toml::from_str(&text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.frontend.love_password.as_deref(), Some(PASSWORD));
        assert_eq!(config.frontend.listen.port(), 4321);
        assert_eq!(config.frontend.tokens, [TOKEN]);
    }

    #[test]
    fn bad_flags_name_the_flag() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            love: LoveArgs,
        }
        let parse = |extra: &[&str]| {
            let args = Cli::parse_from(std::iter::once("love").chain(extra.iter().copied())).love;
            check_args(&args).map_err(|e| e.to_string())
        };
        assert_eq!(parse(&[]).unwrap(), [Server::Django, Server::Meridian]);
        assert!(parse(&["--clients", "0"]).unwrap_err().contains("--clients"));
        assert!(parse(&["--rate", "0"]).unwrap_err().contains("--rate"));
        assert!(parse(&["--duration", "0.1"]).unwrap_err().contains("--duration"));
        assert!(parse(&["--servers", "uvicorn"])
            .unwrap_err()
            .contains("--servers"));
        assert_eq!(parse(&["--servers", "meridian"]).unwrap(), [Server::Meridian]);
    }
}
