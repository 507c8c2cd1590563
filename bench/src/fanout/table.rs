//! How `meridian-bench fanout` run alone prints its figures: a line per
//! run, then markdown tables, the ratios to the bare broadcast and the goal.

use super::args::{FanoutArgs, GOAL_CLIENTS, GOAL_CORES, GOAL_DELIVERED, GOAL_P99};
use super::results::{Run, Server, Setup};
use crate::measure::{core_percent, micros_per, Percentiles};
use std::time::Duration;

/// The figure of memory per idle connection, as printed and reported.
pub fn memory_line(n: usize, m: &Setup, topics: usize) -> String {
    format!(
        "Memory per idle frontend connection ({n} clients, before any data flowed): {:.1} KiB connected, \
         {:.1} KiB subscribed to {topics} topics (target ≤ 16 KiB per idle connection).",
        m.rss_connected / 1024.0,
        m.rss_subscribed / 1024.0,
    )
}

pub(super) fn run_line(label: &str, r: &Run) -> String {
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

pub(super) fn print_report(
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

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
