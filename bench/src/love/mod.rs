//! `meridian-bench love`: the replaced system's approach (LOVE's manager: a
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
//! - meridian: `meridian manager --role frontend` as a subprocess (the
//!   `meridian` binary beside this one, or `--meridian PATH`), whose LOVE endpoint writes producer messages to the store
//!   (Redis streams) and fans them out from there, as in production.
//!
//! Each is a separate process started fresh for its run, so its CPU and RSS
//! are read from `/proc/<pid>` the same way; redis-server's CPU is reported
//! apart. The load (producers here, browsers in their own process) is not
//! counted for either server, but shares the machine's cores with them.
//!
//! Layout:
//! - this file: the loop over client counts and servers.
//! - `args`: the flags, the servers compared, the timeouts and what every run shares.
//! - `relay`: the Python relay's venv (`bench/love/setup`) and its versions.
//! - `server`: a server under test as a process of its own (daphne, or `meridian manager`).
//! - `run`: one measured run (server, producers, browsers, warm-up, window).
//! - `rows`: the figures of a run, as a table and as the JSON `all` reads.
//! - `messages`: the LOVE producer messages and browser requests the load is made of.
//! - `producers`: the LOVE producers (in this process); `browsers`: the `love-clients` process.

mod args;
mod browsers;
mod messages;
mod producers;
mod relay;
mod rows;
mod run;
mod server;

pub use args::LoveArgs;
pub use browsers::{run_clients, ClientsArgs};

use crate::open_files::ensure_fds;
use crate::redis_tools::{self, require_tools};
use crate::shutdown::interrupted;
use anyhow::{bail, Context};
use args::{RunContext, Server};
use messages::{plan, CSC};
use relay::{relay_versions, setup_venv, versions_line};
use rows::{print_table, report_json};
use run::measure;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// File descriptors kept for everything but the client connections.
const SPARE_FDS: u64 = 256;

pub async fn run(args: LoveArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let servers = check_args(&args)?;
    require_tools()?;
    let started = Instant::now();
    let venv = tokio::task::block_in_place(|| setup_venv(&args.love_dir))?;
    let versions = tokio::task::block_in_place(|| relay_versions(&venv))?;
    let topics = Arc::new(plan(args.topics)?);
    let redis = redis_tools::start_server()?;
    let machine = machine();
    let tick_ms = meridian_config::Config::default().frontend.tick_ms;
    let mean = topics.iter().map(|t| t.payload.len()).sum::<usize>() / topics.len();
    let instances = topics.last().map_or(0, |t| t.salindex);
    println!(
        "meridian-bench love: {} topics of {CSC} telemetry at {} Hz from {instances} LOVE producer connection(s) \
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
        redis.version(),
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
            redis_tools::flush(&redis)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
