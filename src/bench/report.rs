//! The markdown report of `bench all`: the machine, the run, a summary
//! table and one section per measurement, each with its baseline from the
//! same run and the ratio. Everything here is pure (results in, text out)
//! so the layout is tested without running anything; `all.rs` gathers the
//! results and the machine's description.

use super::fanout::{FanoutResults, Server};
use super::ingest::{IngestResults, SPREAD_STREAMS};
use super::measure::{micros_per, Percentiles};
use super::night::{Hops, NightResults};
use std::fmt::Write as _;
use std::time::Duration;

/// A load average (1 min) above this fraction of the cores is reported as
/// high: other work then competes with the bench for the CPU.
const HIGH_LOAD_PER_CORE: f64 = 0.5;

/// The machine a run measured.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_bytes: u64,
    pub kernel: String,
}

/// One markdown table.
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub header: Vec<String>,
    /// Right-aligned columns (numbers).
    pub right: Vec<bool>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table whose columns are given as `(title, right_aligned)`.
    pub fn new(columns: &[(&str, bool)]) -> Table {
        Table {
            header: columns.iter().map(|(t, _)| t.to_string()).collect(),
            right: columns.iter().map(|(_, r)| *r).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | ").replace('\n', " "));
        out.push_str(&line(&self.header));
        let rule: Vec<String> = self
            .right
            .iter()
            .map(|&r| if r { "---:".into() } else { "---".into() })
            .collect();
        out.push_str(&format!("|{}|\n", rule.join("|")));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// One section of the report: a title, what it measured, its tables, and notes after them.
#[derive(Clone, Debug, Default)]
pub struct Section {
    pub title: String,
    pub intro: String,
    pub tables: Vec<Table>,
    pub notes: Vec<String>,
}

/// The whole report.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub machine: Machine,
    /// UTC, ISO 8601.
    pub date: String,
    pub commit: String,
    pub command: String,
    /// The three load averages, at the start and at the end.
    pub load_start: [f64; 3],
    pub load_end: [f64; 3],
    pub wall: Duration,
    pub summary: Table,
    pub sections: Vec<Section>,
}

impl Report {
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(out, "# Meridian benchmark report\n");
        let _ = writeln!(
            out,
            "- machine: {}, {} cores, {:.1} GiB memory, Linux {}",
            m.cpu,
            m.cores,
            m.memory_bytes as f64 / (1u64 << 30) as f64,
            m.kernel
        );
        let _ = writeln!(out, "- date: {}; commit {}", self.date, self.commit);
        let _ = writeln!(out, "- command: `{}`", self.command);
        let _ = writeln!(
            out,
            "- load average (1, 5, 15 min): {} at the start, {} at the end; the run took {}",
            loads(&self.load_start),
            loads(&self.load_end),
            super::progress::clock(self.wall)
        );
        if let Some(warning) = load_warning(self.load_start, self.machine.cores) {
            let _ = writeln!(out, "\n> **Warning:** {warning}");
        }
        let _ = writeln!(out, "\n## Summary\n");
        out.push_str(&self.summary.markdown());
        for s in &self.sections {
            let _ = writeln!(out, "\n## {}\n", s.title);
            if !s.intro.is_empty() {
                let _ = writeln!(out, "{}\n", s.intro);
            }
            for (i, t) in s.tables.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                out.push_str(&t.markdown());
            }
            if !s.notes.is_empty() {
                out.push('\n');
                for n in &s.notes {
                    let _ = writeln!(out, "- {n}");
                }
            }
        }
        out
    }
}

fn loads(l: &[f64; 3]) -> String {
    format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
}

/// A warning when the 1-minute load average at the start was high for
/// `cores`: the figures then understate what the machine can do.
pub fn load_warning(load: [f64; 3], cores: usize) -> Option<String> {
    let limit = cores.max(1) as f64 * HIGH_LOAD_PER_CORE;
    (load[0] > limit).then(|| {
        format!(
            "the load average was {:.2} when the run started (more than {limit:.1} on {cores} cores): \
             other work competed for the CPU, so throughput and lag figures are worse than on a quiet machine.",
            load[0]
        )
    })
}

/// The three load averages of a `/proc/loadavg` text.
pub fn parse_loadavg(text: &str) -> [f64; 3] {
    let mut out = [f64::NAN; 3];
    for (o, v) in out.iter_mut().zip(text.split_whitespace()) {
        *o = v.parse().unwrap_or(f64::NAN);
    }
    out
}

/// `a ÷ b`, or `None` when it means nothing (no baseline, not a number).
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    let r = a / b;
    (b > 0.0 && r.is_finite()).then_some(r)
}

/// A ratio with two decimals, or `-`.
pub fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `p50 / p99 / max` in ms, or `-` without values.
pub fn fmt_lag(p: &Percentiles) -> String {
    match p.count {
        0 => "-".into(),
        _ => format!("{:.1} / {:.1} / {:.1}", ms(p.p50), ms(p.p99), ms(p.max)),
    }
}

/// A rate per second with no decimals, thousands apart.
pub fn fmt_rate(r: f64) -> String {
    if !r.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", r.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if r < 0.0 {
        out.insert(0, '-');
    }
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / (1u64 << 20) as f64)
}

/// The summary table's columns.
pub fn summary_table() -> Table {
    Table::new(&[
        ("section", false),
        ("measured", false),
        ("throughput", true),
        ("baseline (same run)", true),
        ("ratio", true),
        ("lag p50 / p99 / max (ms)", false),
        ("CPU (cores)", true),
        ("RSS (MiB)", true),
    ])
}

/// The Redis baseline and the ingest path: sections and summary rows.
pub fn ingest_sections(r: &IngestResults, summary: &mut Table) -> Vec<Section> {
    let k = r.producers;
    let mut redis = Section {
        title: "Redis baseline: redis-benchmark XADD, pipelined".into(),
        intro: format!(
            "`redis-benchmark -P 64 XADD … MAXLEN ~ … * f <payload>` against the same private redis-server \
             {} (persistence off) that the ingest then writes to; over {SPREAD_STREAMS} streams (`-r \
             {SPREAD_STREAMS}`) as a site has, and over {k} streams as the ingest run writes.",
            r.redis_version
        ),
        ..Section::default()
    };
    let mut t = Table::new(&[
        ("payload", true),
        (&format!("XADD/s, {SPREAD_STREAMS} streams"), true),
        (&format!("XADD/s, {k} streams"), true),
        ("redis-server µs CPU per XADD", true),
    ]);
    for row in &r.rows {
        t.row(vec![
            format!("{} B", row.payload),
            fmt_rate(row.spread.rps),
            fmt_rate(row.same_streams.rps),
            format!("{:.2}", row.spread.redis_cpu_us),
        ]);
    }
    redis.tables.push(t);

    let mut ingest = Section {
        title: "Ingest path: QUIC producers → ingest → Redis".into(),
        intro: format!(
            "{k} synthetic producers (own QUIC connection each) stream batches of one topic to an \
             in-process ingest as fast as it acknowledges; throughput counts acknowledged samples, each \
             checked to be in Redis afterwards. Baseline: redis-benchmark above."
        ),
        ..Section::default()
    };
    let mut t = Table::new(&[
        ("payload", true),
        ("samples/s", true),
        (&format!("÷ redis-benchmark ({SPREAD_STREAMS} streams)"), true),
        (&format!("÷ redis-benchmark ({k} streams)"), true),
        ("ack lag p50 / p99 / max (ms)", false),
        ("ingest (cores)", true),
        ("producers (cores)", true),
        ("redis-server (cores)", true),
        ("ingest µs CPU/sample", true),
        ("acked / stored", false),
    ]);
    for row in &r.rows {
        let i = &row.ingest;
        let secs = i.wall.as_secs_f64();
        let cores = |d: Duration| format!("{:.2}", d.as_secs_f64() / secs);
        t.row(vec![
            format!("{} B", row.payload),
            fmt_rate(i.rate),
            fmt_ratio(ratio(i.rate, row.spread.rps)),
            fmt_ratio(ratio(i.rate, row.same_streams.rps)),
            fmt_lag(&i.latency),
            cores(i.cpu.under_test()),
            cores(i.cpu.load),
            cores(i.cpu.redis),
            format!("{:.2}", micros_per(i.cpu.under_test(), i.samples_in_window)),
            format!(
                "{} / {}{}",
                i.acked,
                i.stored,
                if i.stored >= i.acked { "" } else { " LOST" }
            ),
        ]);
        summary.row(vec![
            "Redis".into(),
            format!("redis-benchmark XADD -P 64, {} B", row.payload),
            format!("{}/s", fmt_rate(row.spread.rps)),
            "-".into(),
            "-".into(),
            "-".into(),
            format!(
                "{:.2} (redis-server)",
                row.spread.rps * row.spread.redis_cpu_us / 1e6
            ),
            "-".into(),
        ]);
        summary.row(vec![
            "Ingest".into(),
            format!("QUIC → ingest → Redis, {} B", row.payload),
            format!("{} samples/s", fmt_rate(i.rate)),
            format!("{}/s", fmt_rate(row.spread.rps)),
            fmt_ratio(ratio(i.rate, row.spread.rps)),
            format!("ack {}", fmt_lag(&i.latency)),
            format!("{:.2}", i.cpu.under_test().as_secs_f64() / secs),
            "-".into(),
        ]);
    }
    ingest.tables.push(t);
    ingest.notes.push(format!(
        "Goal: ingest ÷ redis-benchmark ({SPREAD_STREAMS} streams) ≥ {}.",
        super::ingest::GOAL_RATIO
    ));
    vec![redis, ingest]
}

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

/// Picks one hop's percentiles.
type HopOf = fn(&Hops) -> &Percentiles;

/// The night-like load: a section (throughput, lag per hop, CPU and RSS
/// per role) and summary rows.
pub fn night_section(r: &NightResults, summary: &mut Table) -> Section {
    let mut section = Section {
        title: "Night-like load: simulators → producers → ingest → Redis → frontend → browsers".into(),
        intro: format!(
            "Simulated {} (one producer process each), an ingest process, a frontend process, a \
             private redis-server, and {} browsers each subscribed to every topic of every CSC, measured \
             for {:.0} s. Stored: the ingest's `meridian_ingest_samples_stored_total`; delivered: counted \
             by the browsers. Baseline: what was stored, times the browsers (each should get all of it; \
             telemetry is conflated per tick by design).",
            r.cscs.join(", "),
            r.browsers,
            r.wall.as_secs_f64()
        ),
        ..Section::default()
    };
    let mut t = Table::new(&[
        ("", false),
        ("stored /s", true),
        ("delivered /s (all browsers)", true),
        ("delivered ÷ (stored × browsers)", true),
    ]);
    t.row(vec![
        "telemetry samples".into(),
        fmt_rate(r.stored_telemetry),
        fmt_rate(r.delivered_telemetry),
        fmt_ratio(r.delivered_ratio(true)),
    ]);
    t.row(vec![
        "events".into(),
        format!("{:.1}", r.stored_events),
        format!("{:.1}", r.delivered_events),
        fmt_ratio(r.delivered_ratio(false)),
    ]);
    t.row(vec![
        "events the ingest derives (ScriptQueueState, ScriptHeartbeats)".into(),
        "-".into(),
        format!("{:.1}", r.delivered_derived),
        "-".into(),
    ]);
    section.tables.push(t);

    let mut hops = Table::new(&[
        ("hop (p50 / p99 / max, ms)", false),
        ("telemetry", false),
        ("events", false),
    ]);
    let rows: [(&str, HopOf); 4] = [
        ("source → ingest (source_ts → ingest_ts)", |h| {
            &h.source_ingest
        }),
        ("ingest → frontend read (ingest_ts → frontend_ts)", |h| {
            &h.ingest_frontend
        }),
        ("frontend → browser (frontend_ts → receipt)", |h| {
            &h.frontend_browser
        }),
        ("end to end (source_ts → receipt)", |h| &h.end_to_end),
    ];
    for (name, pick) in rows {
        hops.row(vec![
            name.into(),
            fmt_lag(pick(&r.telemetry)),
            fmt_lag(pick(&r.events)),
        ]);
    }
    section.tables.push(hops);

    let mut roles = Table::new(&[
        ("role", false),
        ("CPU (cores)", true),
        ("RSS at end (MiB)", true),
        ("RSS max (MiB)", true),
    ]);
    for role in &r.roles {
        roles.row(vec![
            role.role.clone(),
            format!("{:.3}", role.cores),
            mib(role.rss_end),
            mib(role.rss_max),
        ]);
    }
    section.tables.push(roles);
    section.notes.push(format!(
        "Lag samples: {} telemetry, {} events. Browsers closed: {}; lost-event notices: {}.",
        r.telemetry.end_to_end.count, r.events.end_to_end.count, r.closed, r.lost_notices
    ));
    section.notes.push(
        "The browsers' CPU and RSS are the bench process's: its RSS also holds what the earlier sections \
         left on its heap."
            .into(),
    );
    // The derived events are in neither side of the ratio: the stored counter does not count them.
    let delivered = r.delivered_telemetry + r.delivered_events;
    let stored = r.stored_telemetry + r.stored_events;
    let rss_of = |name: &str| {
        r.roles
            .iter()
            .filter(|x| x.role.starts_with(name))
            .map(|x| x.rss_max)
            .sum::<u64>()
    };
    summary.row(vec![
        "Night".into(),
        format!("{} CSCs, {} browsers: stored", r.cscs.len(), r.browsers),
        format!("{} samples/s", fmt_rate(stored)),
        "-".into(),
        "-".into(),
        format!("source → ingest {}", fmt_lag(&r.telemetry.source_ingest)),
        format!("{:.2} (all roles but browsers)", r.system_cores()),
        format!(
            "{} (all roles but browsers)",
            mib(rss_of("") - rss_of("browsers"))
        ),
    ]);
    summary.row(vec![
        "Night".into(),
        "delivered to the browsers".into(),
        format!("{} samples/s", fmt_rate(delivered)),
        format!("{}/s (stored × browsers)", fmt_rate(stored * r.browsers as f64)),
        fmt_ratio(ratio(delivered, stored * r.browsers as f64)),
        format!("end to end {}", fmt_lag(&r.telemetry.end_to_end)),
        format!(
            "frontend {:.2}",
            r.roles
                .iter()
                .find(|x| x.role == "frontend")
                .map_or(0.0, |x| x.cores)
        ),
        format!("frontend {}", mib(rss_of("frontend"))),
    ]);
    section
}

/// The LOVE comparison (`bench love --json`): one row of its JSON.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoveRow {
    pub server: String,
    pub clients: u64,
    pub topics: u64,
    pub rate_hz: f64,
    pub offered_per_s: f64,
    pub delivered_per_s: f64,
    pub server_cores: f64,
    pub per_core: f64,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    pub server_rss_mib: f64,
    pub note: String,
}

/// What `bench love --json` wrote.
#[derive(Clone, Debug, Default)]
pub struct LoveResults {
    pub rows: Vec<LoveRow>,
    /// Package name and version of the replaced system's stack.
    pub versions: Vec<(String, String)>,
    pub machine: String,
}

/// Reads the JSON of `bench love --json`; the error names the missing or mistyped field.
pub fn parse_love(text: &str) -> anyhow::Result<LoveResults> {
    use anyhow::Context;
    let v: serde_json::Value = serde_json::from_str(text).context("bench love --json: not JSON")?;
    let rows = v
        .get("rows")
        .and_then(|r| r.as_array())
        .context("bench love --json: no `rows` array")?;
    let mut out = LoveResults::default();
    for (i, row) in rows.iter().enumerate() {
        let num = |k: &str| {
            row.get(k)
                .and_then(|x| x.as_f64())
                .with_context(|| format!("bench love --json: rows[{i}].{k} is missing or not a number"))
        };
        let text = |k: &str| row.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        out.rows.push(LoveRow {
            server: text("server"),
            clients: num("clients")? as u64,
            topics: num("topics")? as u64,
            rate_hz: num("rate_hz")?,
            offered_per_s: num("offered_per_s")?,
            delivered_per_s: num("delivered_per_s")?,
            server_cores: num("server_cores")?,
            per_core: num("per_core")?,
            lag_p50_ms: num("lag_p50_ms")?,
            lag_p99_ms: num("lag_p99_ms")?,
            lag_max_ms: num("lag_max_ms")?,
            server_rss_mib: num("server_rss_mib")?,
            note: text("note"),
        });
    }
    if let Some(versions) = v.get("versions").and_then(|x| x.as_object()) {
        for (name, version) in versions {
            out.versions
                .push((name.clone(), version.as_str().unwrap_or("?").to_string()));
        }
    }
    out.machine = v
        .get("machine")
        .and_then(|m| m.as_str())
        .unwrap_or("")
        .to_string();
    Ok(out)
}

/// The LOVE comparison: its section and summary rows, or a section that
/// says why it was not run.
pub fn love_section(love: Result<&LoveResults, &str>, summary: &mut Table) -> Section {
    let title = "LOVE comparison: Django Channels + channels_redis vs Meridian's LOVE endpoint".to_string();
    let love = match love {
        Ok(l) => l,
        Err(reason) => {
            summary.row(vec![
                "LOVE".into(),
                format!("not run ({reason})"),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            return Section {
                title,
                intro: format!("LOVE comparison: not run ({reason})."),
                ..Section::default()
            };
        }
    };
    let versions: Vec<String> = love.versions.iter().map(|(n, v)| format!("{n} {v}")).collect();
    let mut section = Section {
        title,
        intro: format!(
            "`meridian bench love`: the same LOVE producer messages relayed to the same clients by a \
             Django Channels + channels_redis relay ({}) and by Meridian's LOVE-compatible endpoint. \
             Messages per second per server core, and lag.",
            if versions.is_empty() {
                "versions not reported".into()
            } else {
                versions.join(", ")
            }
        ),
        ..Section::default()
    };
    let mut t = Table::new(&[
        ("server", false),
        ("clients", true),
        ("topics × Hz", false),
        ("offered /s", true),
        ("delivered /s", true),
        ("server cores", true),
        ("messages/s per core", true),
        ("lag p50 / p99 / max (ms)", false),
        ("RSS (MiB)", true),
        ("note", false),
    ]);
    for row in &love.rows {
        t.row(vec![
            row.server.clone(),
            row.clients.to_string(),
            format!("{} × {}", row.topics, row.rate_hz),
            fmt_rate(row.offered_per_s),
            fmt_rate(row.delivered_per_s),
            format!("{:.2}", row.server_cores),
            fmt_rate(row.per_core),
            format!(
                "{:.1} / {:.1} / {:.1}",
                row.lag_p50_ms, row.lag_p99_ms, row.lag_max_ms
            ),
            format!("{:.0}", row.server_rss_mib),
            row.note.clone(),
        ]);
    }
    section.tables.push(t);
    let mut clients: Vec<u64> = love.rows.iter().map(|r| r.clients).collect();
    clients.dedup();
    for n in clients {
        let find = |server: &str| love.rows.iter().find(|r| r.clients == n && r.server == server);
        if let (Some(m), Some(d)) = (find("meridian"), find("django-channels")) {
            let line = format!(
                "{n} clients: Meridian ÷ Django Channels: messages/s per core {}; Django Channels ÷ Meridian: p99 lag {}.",
                fmt_ratio(ratio(m.per_core, d.per_core)),
                fmt_ratio(ratio(d.lag_p99_ms, m.lag_p99_ms)),
            );
            section.notes.push(line);
            summary.row(vec![
                "LOVE".into(),
                format!("{n} clients, LOVE protocol: Meridian"),
                format!("{}/s per core", fmt_rate(m.per_core)),
                format!("{}/s per core (Django Channels)", fmt_rate(d.per_core)),
                fmt_ratio(ratio(m.per_core, d.per_core)),
                format!(
                    "{:.1} / {:.1} / {:.1} (Django: p99 {:.1})",
                    m.lag_p50_ms, m.lag_p99_ms, m.lag_max_ms, d.lag_p99_ms
                ),
                format!("{:.2} (Django {:.2})", m.server_cores, d.server_cores),
                format!("{:.0} (Django {:.0})", m.server_rss_mib, d.server_rss_mib),
            ]);
        }
    }
    if !love.machine.is_empty() {
        section
            .notes
            .push(format!("Machine as bench love saw it: {}.", love.machine));
    }
    section
}

/// The UTC date and time of a Unix time, ISO 8601 (civil-from-days, so no
/// date crate is needed for one line of a report).
pub fn iso_utc(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::super::night::RoleFigures;
    use super::*;

    fn lag(p50: u64, p99: u64, max: u64, count: usize) -> Percentiles {
        Percentiles {
            count,
            p50: Duration::from_micros(p50),
            p99: Duration::from_micros(p99),
            max: Duration::from_micros(max),
        }
    }

    fn night() -> NightResults {
        let hops = Hops {
            end_to_end: lag(3_000, 12_500, 40_000, 9000),
            source_ingest: lag(1_000, 4_000, 9_000, 9000),
            ingest_frontend: lag(1_500, 6_000, 20_000, 9000),
            frontend_browser: lag(500, 2_500, 11_000, 9000),
        };
        NightResults {
            cscs: vec!["MTM1M3:0".into(), "Test:1".into()],
            browsers: 20,
            wall: Duration::from_secs(60),
            stored_telemetry: 450.0,
            stored_events: 5.0,
            delivered_telemetry: 8_820.0,
            delivered_events: 100.0,
            delivered_derived: 2.0,
            telemetry: hops,
            events: Hops::default(),
            roles: vec![
                RoleFigures {
                    role: "ingest".into(),
                    cores: 0.125,
                    rss_end: 30 << 20,
                    rss_max: 32 << 20,
                },
                RoleFigures {
                    role: "frontend".into(),
                    cores: 0.25,
                    rss_end: 40 << 20,
                    rss_max: 41 << 20,
                },
                RoleFigures {
                    role: "browsers (20, in the bench process)".into(),
                    cores: 0.5,
                    rss_end: 10 << 20,
                    rss_max: 10 << 20,
                },
            ],
            closed: 0,
            lost_notices: 0,
        }
    }

    #[test]
    fn tables_render_as_markdown_with_aligned_columns() {
        let mut t = Table::new(&[("name", false), ("rate", true)]);
        t.row(vec!["a".into(), fmt_rate(1234567.4)]);
        assert_eq!(t.markdown(), "| name | rate |\n|---|---:|\n| a | 1,234,567 |\n");
    }

    #[test]
    fn the_night_section_carries_every_figure_of_its_results() {
        let mut summary = summary_table();
        let s = night_section(&night(), &mut summary);
        let text: String = s.tables.iter().map(Table::markdown).collect();
        assert!(
            text.contains("| telemetry samples | 450 | 8,820 | 0.98 |"),
            "{text}"
        );
        assert!(text.contains("| events | 5.0 | 100.0 | 1.00 |"), "{text}");
        assert!(
            text.contains("| ingest → frontend read (ingest_ts → frontend_ts) | 1.5 / 6.0 / 20.0 | - |"),
            "{text}"
        );
        assert!(text.contains("| frontend | 0.250 | 40 | 41 |"), "{text}");
        let rows = summary.markdown();
        // The system's CPU and memory leave the browsers out.
        assert!(rows.contains("0.38 (all roles but browsers)"), "{rows}");
        assert!(rows.contains("73 (all roles but browsers)"), "{rows}");
        assert!(rows.contains("| 9,100/s (stored × browsers) | 0.98 |"), "{rows}");
    }

    #[test]
    fn the_report_has_the_machine_the_run_and_a_warning_when_busy() {
        let mut report = Report {
            machine: Machine {
                cpu: "Test CPU".into(),
                cores: 2,
                memory_bytes: 8 << 30,
                kernel: "6.1.0".into(),
            },
            date: iso_utc(1_764_638_400),
            commit: "abc1234".into(),
            command: "meridian bench all".into(),
            load_start: [0.4, 0.5, 0.6],
            load_end: [1.0, 0.7, 0.6],
            wall: Duration::from_secs(420),
            summary: summary_table(),
            sections: Vec::new(),
        };
        report.sections.push(night_section(&night(), &mut report.summary));
        let md = report.markdown();
        assert!(md.starts_with("# Meridian benchmark report\n"));
        assert!(md.contains("- machine: Test CPU, 2 cores, 8.0 GiB memory, Linux 6.1.0"));
        assert!(
            md.contains("- date: 2025-12-02 01:20:00 UTC; commit abc1234"),
            "{md}"
        );
        assert!(md.contains("0.40 0.50 0.60 at the start, 1.00 0.70 0.60 at the end; the run took 7m00s"));
        assert!(md.contains("\n## Summary\n\n| section |"));
        assert!(md.contains("\n## Night-like load"));
        assert!(!md.contains("Warning"));
        report.load_start = [3.5, 2.0, 1.0];
        assert!(report
            .markdown()
            .contains("> **Warning:** the load average was 3.50"));
    }

    #[test]
    fn ratios_loads_and_dates() {
        assert_eq!(ratio(1.0, 4.0), Some(0.25));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(fmt_ratio(None), "-");
        assert_eq!(parse_loadavg("0.52 1.10 2.00 1/234 5678"), [0.52, 1.10, 2.00]);
        assert_eq!(iso_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(iso_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(fmt_rate(999.6), "1,000");
        assert_eq!(fmt_lag(&Percentiles::default()), "-");
    }

    #[test]
    fn love_json_is_read_and_compared_per_core() {
        let json = r#"{"rows":[
            {"server":"django-channels","clients":100,"topics":10,"rate_hz":10,"offered_per_s":10000,
             "delivered_per_s":9000,"server_cores":1.5,"per_core":6000,"lag_p50_ms":40,"lag_p99_ms":200,
             "lag_max_ms":900,"server_rss_mib":120,"note":"4 daphne workers"},
            {"server":"meridian","clients":100,"topics":10,"rate_hz":10,"offered_per_s":10000,
             "delivered_per_s":10000,"server_cores":0.2,"per_core":50000,"lag_p50_ms":2,"lag_p99_ms":8,
             "lag_max_ms":20,"server_rss_mib":30,"note":""}],
            "versions":{"django":"5.2","channels":"4.3"},"machine":"2 cores"}"#;
        let love = parse_love(json).unwrap();
        assert_eq!(love.rows.len(), 2);
        assert_eq!(love.rows[1].per_core, 50000.0);
        let mut summary = summary_table();
        let s = love_section(Ok(&love), &mut summary);
        assert!(
            s.notes[0].contains("messages/s per core 8.33; Django Channels ÷ Meridian: p99 lag 25.00"),
            "{:?}",
            s.notes
        );
        assert!(s.intro.contains("django 5.2"));
        let err = parse_love(r#"{"rows":[{"server":"meridian"}]}"#).unwrap_err();
        assert!(err.to_string().contains("rows[0].clients"), "{err}");
        let mut summary = summary_table();
        let s = love_section(Err("the subcommand is not in this build"), &mut summary);
        assert_eq!(
            s.intro,
            "LOVE comparison: not run (the subcommand is not in this build)."
        );
    }
}
