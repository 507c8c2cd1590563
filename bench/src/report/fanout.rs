//! The report's section of one `fanout` run: the frontend against the bare broadcast.

use super::section::Section;
use super::table::{fmt_lag, fmt_rate, fmt_ratio, ms, ratio, Table};
use crate::fanout::{
    memory_line, FanoutResults, Run, Server, GOAL_CLIENTS, GOAL_CORES, GOAL_DELIVERED, GOAL_P99,
};
use crate::measure::{micros_per, Percentiles};

/// The fan-out runs: a section and summary rows.
pub fn fanout_section(r: &FanoutResults, summary: &mut Table) -> Section {
    let mut section = Section {
        title: format!(
            "Fan-out: producers → ingest → Redis → frontend → WebSocket clients ({} topics, {} frames)",
            r.topics,
            r.format.name()
        ),
        intro: format!(
            "{} MTM1M3 telemetry topics at {} Hz, every client subscribed to all, frontend.tick_ms {}; \
             the clients are a second process. Baseline: a bare axum/tungstenite server that broadcasts \
             the same frames to the same clients (no Redis, no hub, no per-client work). Lag is producer \
             → client, from the first clients of each run.",
            r.topics,
            r.rate_hz,
            r.tick.as_millis()
        ),
        ..Section::default()
    };
    let mut t = Table::new(&[
        ("clients", true),
        ("server", false),
        ("delivered samples/s", true),
        ("of offered", true),
        ("lag p50 / p99 / max (ms)", false),
        ("source → ingest p50 / p99", false),
        ("ingest → frontend p50 / p99", false),
        ("frontend → client p50 / p99", false),
        ("server (cores)", true),
        ("ingest (cores)", true),
        ("redis (cores)", true),
        ("RSS per connection (KiB)", true),
    ]);
    let p50_p99 = |p: &Percentiles| match p.count {
        0 => "-".to_string(),
        _ => format!("{:.1} / {:.1}", ms(p.p50), ms(p.p99)),
    };
    for run in &r.runs {
        let secs = run.wall.as_secs_f64();
        let frontend = run.server == Server::Frontend;
        t.row(vec![
            run.clients.to_string(),
            format!("{}{}", run.server.name(), if run.skewed { " *" } else { "" }),
            fmt_rate(run.rate()),
            format!("{:.1}%", run.fraction() * 100.0),
            fmt_lag(&run.lag[0]),
            if frontend {
                p50_p99(&run.lag[1])
            } else {
                "-".into()
            },
            if frontend {
                p50_p99(&run.lag[2])
            } else {
                "-".into()
            },
            if frontend {
                p50_p99(&run.lag[3])
            } else {
                "-".into()
            },
            format!("{:.2}", run.cores()),
            if frontend {
                format!("{:.2}", run.cpu.ingest.as_secs_f64() / secs)
            } else {
                "-".into()
            },
            if frontend {
                format!("{:.2}", run.cpu.redis.as_secs_f64() / secs)
            } else {
                "-".into()
            },
            if frontend {
                format!("{:.0}", run.rss_loaded / 1024.0)
            } else {
                "-".into()
            },
        ]);
    }
    section.tables.push(t);
    for pair in r.runs.chunks(2) {
        if let [f, b] = pair {
            let per_sample = |run: &super::fanout::Run| micros_per(run.cpu.server, run.delivered);
            section.notes.push(format!(
                "{} clients: frontend ÷ bare broadcast: delivered {}, server CPU per delivered sample {}.",
                f.clients,
                fmt_ratio(ratio(f.rate(), b.rate())),
                fmt_ratio(ratio(per_sample(f), per_sample(b))),
            ));
            summary.row(vec![
                "Fan-out".into(),
                format!("{} clients × {} topics, {}", f.clients, r.topics, r.format.name()),
                format!("{} samples/s", fmt_rate(f.rate())),
                format!("{}/s (bare)", fmt_rate(b.rate())),
                fmt_ratio(ratio(f.rate(), b.rate())),
                fmt_lag(&f.lag[0]),
                format!("{:.2}", f.cores()),
                "-".into(),
            ]);
        }
    }
    if r.runs.iter().any(|run| run.skewed) {
        section
            .notes
            .push("* started while the frontend was still busy with the previous run's clients.".into());
    }
    if let Some((n, setup)) = &r.memory {
        section
            .notes
            .push(super::fanout::memory_line(*n, setup, r.topics));
    }
    section.notes.push(format!(
        "Goal: {} clients on ≤ {} frontend core with p99 < {} ms and ≥ {:.0}% of offered delivered.",
        super::fanout::GOAL_CLIENTS,
        super::fanout::GOAL_CORES,
        super::fanout::GOAL_P99.as_millis(),
        super::fanout::GOAL_DELIVERED * 100.0
    ));
    section
}
