//! One measured run of `love`: a fresh server, its LOVE producers and
//! browsers, a warm-up, then the window; the row of figures it gives.

use super::args::{RunContext, Server, ANSWER_TIMEOUT, PASSWORD, START_TIMEOUT, TOKEN, WARMUP};
use super::messages::Topic;
use super::producers::{start_producers, Flow};
use super::rows::Row;
use super::server::{rss_mib, ServerProcess};
use crate::binaries;
use crate::load_generator::{field, LoadGenerator};
use crate::measure::{process_cpu, Percentiles};
use crate::redis_tools;
use crate::shutdown::sleep_unless;
use anyhow::{bail, Context};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// One run: a fresh server, its producers and clients, warm-up, the window.
pub(super) async fn measure(
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
        process_cpu(redis_tools::pid(ctx.redis)),
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
        process_cpu(redis_tools::pid(ctx.redis)),
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
    let exe = binaries::bench()?;
    let mut command = Command::new(exe);
    command
        .args(["love-clients", "--url", url])
        .args(["--clients", &clients.to_string()])
        .args(["--lag-clients", &lag_clients.to_string()])
        .arg("--subscribe")
        .arg(groups.join(","))
        .env("RUST_LOG", "warn");
    LoadGenerator::spawn(command, "meridian-bench love-clients")
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
