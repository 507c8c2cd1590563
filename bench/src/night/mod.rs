//! The night-like load of `meridian-bench all`: the simulators of a night
//! at the summit, each behind its own producer process, an ingest process,
//! a frontend process and a private `redis-server`, with browsers subscribed
//! to everything, measured for a fixed window.
//!
//! Every role is a process of its own (the `meridian` binary started with
//! the role's subcommand, as a deployment runs it), so CPU
//! (`/proc/<pid>/stat`) and RSS (`/proc/<pid>/status`) are per role. The
//! browsers run in this process, which does nothing else while measuring:
//! its CPU is theirs. Lag per hop comes from the timestamps every native
//! sample carries (`source_ts`, `ingest_ts`, `frontend_ts`) and the
//! browser's clock on receipt, recorded into bounded histograms
//! ([`LagHistogram`]). Stored rates come from the ingest's `/metrics`
//! (`meridian_ingest_samples_stored_total`), delivered rates from the
//! browsers' counts.
//!
//! Layout:
//! - this file: what runs, and the measurement of the window.
//! - `roles`: a role as a `meridian` process; `scrape`: its `/readyz` and `/metrics`.
//! - `browsers`: the browsers, in this process.
//! - `results`: what the night measured.

mod browsers;
mod results;
mod roles;
mod scrape;

pub use results::{Hops, NightResults, RoleFigures};

use crate::binaries;
use crate::measure::{own_cpu, process_cpu, process_rss, LagHistogram};
use crate::progress::Say;
use crate::redis_tools::{self, free_port, require_tools};
use crate::shutdown::sleep_unless;
use anyhow::{bail, Context};
use browsers::{browser, Hists, Tally, WATCHED};
use roles::{free_udp_port, RoleProcess, START_TIMEOUT};
use scrape::{http_get, metric_sum};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The simulated CSCs of the night, one producer process each: M1M3's
/// 50 Hz telemetry is most of the load; the mount, the dome, a
/// ScriptQueue running Scripts and the Test CSC add the rest and the events.
pub const NIGHT: &[&str] = &["MTM1M3:0", "MTMount:0", "ATDome:0", "ScriptQueue:1", "Test:1"];

/// The frontend's default read token (`frontend.tokens`).
const TOKEN: &str = "dev-token";

#[derive(Clone, Debug)]
pub struct NightArgs {
    /// Data flows this long (every role started, browsers subscribed) before the window opens.
    pub warmup: Duration,
    /// The measurement window.
    pub window: Duration,
    /// Browsers, each subscribed to everything.
    pub browsers: usize,
    /// The `meridian` binary the roles run (`--meridian`); `None`: the one beside this executable.
    pub meridian: Option<PathBuf>,
}

/// What is read at the start and the end of the window.
struct Snapshot {
    at: Instant,
    telemetry: u64,
    events: u64,
    derived: u64,
    stored_telemetry: f64,
    stored_events: f64,
    cpu: Vec<Duration>,
}

/// Starts the night (Redis, ingest, frontend, a producer per CSC of
/// [`NIGHT`], `args.browsers` browsers), measures for `args.window`, and
/// stops it all.
pub async fn measure(
    args: &NightArgs,
    say: &Say,
    shutdown: CancellationToken,
) -> anyhow::Result<NightResults> {
    if args.browsers == 0 || args.window.is_zero() {
        bail!("the night needs at least one browser and a measurement window");
    }
    require_tools()?;
    let meridian = binaries::meridian(args.meridian.as_deref())?;
    let redis = redis_tools::start_server()?;
    let dir = redis.dir().to_path_buf();
    let ingest_addr = format!("127.0.0.1:{}", free_udp_port());
    let frontend_addr = format!("127.0.0.1:{}", free_port()?);
    let url = redis.url();
    say.step(&format!(
        "night: redis-server {} (pid {}); starting ingest, frontend and {} producers of {} (logs in {})",
        redis.version(),
        redis_tools::pid(&redis),
        NIGHT.len(),
        meridian.display(),
        dir.display()
    ));
    let mut roles = vec![
        RoleProcess::spawn(
            &meridian,
            "ingest",
            &[
                "manager",
                "--role",
                "ingest",
                "--redis",
                &url,
                "--ingest-listen",
                &ingest_addr,
            ],
            &dir,
        )?,
        RoleProcess::spawn(
            &meridian,
            "frontend",
            &[
                // The bench's browsers use the public dev-token.
                "--dev",
                "manager",
                "--role",
                "frontend",
                "--redis",
                &url,
                "--frontend-listen",
                &frontend_addr,
            ],
            &dir,
        )?,
    ];
    for csc in NIGHT {
        roles.push(RoleProcess::spawn(
            &meridian,
            &format!("producer {csc}"),
            &["producer", "--csc", csc, "--ingest", &ingest_addr],
            &dir,
        )?);
    }
    for role in roles.iter_mut() {
        role.wait_ready(&shutdown).await?;
    }

    let tally = Arc::new(Tally::default());
    let recording = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    let ws_url = format!("ws://{frontend_addr}/ws?token={TOKEN}");
    let browsers: Vec<_> = (0..args.browsers)
        .map(|_| {
            tokio::spawn(browser(
                ws_url.clone(),
                tally.clone(),
                recording.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + START_TIMEOUT;
    let want = (args.browsers * WATCHED.len()) as u64;
    while tally.subscribed.load(Ordering::Relaxed) < want {
        if tally.closed.load(Ordering::Relaxed) > 0 {
            bail!("a night browser could not connect or subscribe to {ws_url}");
        }
        if Instant::now() > deadline {
            bail!(
                "the night's browsers got {} of {want} subscription replies within {START_TIMEOUT:?}",
                tally.subscribed.load(Ordering::Relaxed)
            );
        }
        sleep_unless(Duration::from_millis(50), &shutdown).await?;
    }

    let pids: Vec<u32> = std::iter::once(redis_tools::pid(&redis))
        .chain(roles.iter().map(RoleProcess::pid))
        .collect();
    let ingest_metrics = roles[0].metrics;
    let snapshot = |pids: Vec<u32>| {
        let tally = tally.clone();
        async move {
            let page = http_get(ingest_metrics, "/metrics").await?.1;
            let stored = |category: &str| {
                metric_sum(
                    &page,
                    "meridian_ingest_samples_stored_total",
                    Some(&format!("category=\"{category}\"")),
                )
            };
            let mut cpu: Vec<Duration> = pids.iter().map(|&p| process_cpu(p)).collect();
            cpu.push(own_cpu());
            anyhow::Ok(Snapshot {
                at: Instant::now(),
                telemetry: tally.telemetry.load(Ordering::Relaxed),
                events: tally.events.load(Ordering::Relaxed),
                derived: tally.derived.load(Ordering::Relaxed),
                stored_telemetry: stored("telemetry"),
                stored_events: stored("event"),
                cpu,
            })
        }
    };
    // Warm-up, then the window; a tick a second with what is flowing.
    let warm_until = Instant::now() + args.warmup;
    let mut last = (Instant::now(), 0u64);
    let tick = |phase: &str, last: &mut (Instant, u64)| {
        let n = tally.telemetry.load(Ordering::Relaxed) + tally.events.load(Ordering::Relaxed);
        let secs = last.0.elapsed().as_secs_f64().max(1e-3);
        say.tick(&format!(
            "night, {} browsers: {phase}: {:.0} samples/s delivered",
            args.browsers,
            (n - last.1) as f64 / secs
        ));
        *last = (Instant::now(), n);
    };
    while Instant::now() < warm_until {
        sleep_unless(Duration::from_secs(1), &shutdown).await?;
        tick("warm-up", &mut last);
    }
    for role in roles.iter_mut() {
        role.check_alive()?;
    }
    recording.store(true, Ordering::Relaxed);
    let start = snapshot(pids.clone()).await?;
    let mut rss_max = vec![0u64; pids.len() + 1];
    let sample_rss = |rss_max: &mut Vec<u64>| {
        for (i, &pid) in pids.iter().chain([std::process::id()].iter()).enumerate() {
            rss_max[i] = rss_max[i].max(process_rss(pid));
        }
    };
    while start.at.elapsed() + Duration::from_secs(1) < args.window {
        sleep_unless(Duration::from_secs(1), &shutdown).await?;
        sample_rss(&mut rss_max);
        tick(
            &format!(
                "{:.0}/{:.0} s",
                start.at.elapsed().as_secs_f64(),
                args.window.as_secs_f64()
            ),
            &mut last,
        );
    }
    sleep_unless(args.window.saturating_sub(start.at.elapsed()), &shutdown).await?;
    let end = snapshot(pids.clone()).await?;
    recording.store(false, Ordering::Relaxed);
    sample_rss(&mut rss_max);
    say.end_ticks();
    for role in roles.iter_mut() {
        role.check_alive()?;
    }
    let rss_end: Vec<u64> = pids
        .iter()
        .chain([std::process::id()].iter())
        .map(|&p| process_rss(p))
        .collect();

    stop.cancel();
    let mut merged: Hists = Default::default();
    for b in browsers {
        let hists = b.await.context("a night browser panicked")?;
        for (m, h) in merged.iter_mut().zip(hists.iter()) {
            m.merge(h);
        }
    }
    drop(roles);

    let wall = end.at - start.at;
    let secs = wall.as_secs_f64();
    let mut names = vec!["redis-server".to_string(), "ingest".into(), "frontend".into()];
    names.extend(NIGHT.iter().map(|c| format!("producer {c}")));
    names.push(format!("browsers ({}, in the bench process)", args.browsers));
    let role_figures = names
        .into_iter()
        .enumerate()
        .map(|(i, role)| RoleFigures {
            role,
            cores: end.cpu[i].saturating_sub(start.cpu[i]).as_secs_f64() / secs,
            rss_end: rss_end[i],
            rss_max: rss_max[i].max(rss_end[i]),
        })
        .collect();
    let hops = |h: &[LagHistogram]| Hops {
        end_to_end: h[0].percentiles(),
        source_ingest: h[1].percentiles(),
        ingest_frontend: h[2].percentiles(),
        frontend_browser: h[3].percentiles(),
    };
    Ok(NightResults {
        cscs: NIGHT.iter().map(|c| c.to_string()).collect(),
        browsers: args.browsers,
        wall,
        stored_telemetry: (end.stored_telemetry - start.stored_telemetry) / secs,
        stored_events: (end.stored_events - start.stored_events) / secs,
        delivered_telemetry: (end.telemetry - start.telemetry) as f64 / secs,
        delivered_events: (end.events - start.events) as f64 / secs,
        delivered_derived: (end.derived - start.derived) as f64 / secs,
        telemetry: hops(&merged[..4]),
        events: hops(&merged[4..]),
        roles: role_figures,
        closed: tally.closed.load(Ordering::Relaxed),
        lost_notices: tally.lost.load(Ordering::Relaxed),
    })
}
