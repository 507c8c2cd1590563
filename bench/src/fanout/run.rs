//! One measured run of the fan-out bench: the browsers connect (memory per
//! connection), data flows, a warm-up, the window (a progress line a
//! second), then the browsers leave and the frontend is left to become idle.

use super::args::{FanoutArgs, FRONT_THREADS, QUIET_TIMEOUT, SETTLE, WARMUP};
use super::bare::Bare;
use super::clients::{parse_lags, spawn_clients, ClientStat};
use super::publisher::Flow;
use super::results::{Cpu, Run, Server, Setup};
use crate::load_generator::{field, LoadGenerator};
use crate::measure::threads_cpu;
use crate::progress::Say;
use crate::redis_tools::{self, RedisServer};
use crate::shutdown::sleep_unless;
use anyhow::bail;
use meridian_manager::frontend::HubStats;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Everything a run reads but does not own.
pub(super) struct RunContext<'a> {
    pub(super) args: &'a FanoutArgs,
    pub(super) redis: &'a RedisServer,
    pub(super) flow: &'a Arc<Flow>,
    pub(super) bare: &'a Arc<Bare>,
    pub(super) hub: &'a Arc<HubStats>,
    pub(super) topics: usize,
    pub(super) cores: usize,
    pub(super) label: String,
    pub(super) say: &'a Say,
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

/// Memory per idle frontend connection, measured before any data has
/// flowed (later runs reuse heap that earlier ones freed, which would
/// flatter the figure): `n` clients connect, then subscribe, then leave.
pub(super) async fn measure_memory(
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
pub(super) async fn measure(
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
        Cpu::take(server, redis_tools::pid(ctx.redis), clients.pid()),
        Instant::now(),
    );
    while Instant::now() < warm_until {
        sleep_unless(Duration::from_millis(500), shutdown).await?;
        let now = (
            ClientStat::ask(&mut clients, "stat", shutdown).await?,
            Cpu::take(server, redis_tools::pid(ctx.redis), clients.pid()),
            Instant::now(),
        );
        progress.show("warm-up", &last, &now);
        last = now;
    }

    let stat0 = ClientStat::ask(&mut clients, "begin", shutdown).await?;
    let (t0, cpu0, offered0, hub0) = (
        Instant::now(),
        Cpu::take(server, redis_tools::pid(ctx.redis), clients.pid()),
        offered(),
        hub(),
    );
    let window = Duration::from_secs_f64(args.duration_s);
    let mut last = (stat0, cpu0, t0);
    while t0.elapsed() + Duration::from_secs(1) < window {
        sleep_unless(Duration::from_secs(1), shutdown).await?;
        let now = (
            ClientStat::ask(&mut clients, "stat", shutdown).await?,
            Cpu::take(server, redis_tools::pid(ctx.redis), clients.pid()),
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
        Cpu::take(server, redis_tools::pid(ctx.redis), clients.pid()),
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
