//! The report's sections of `ingest`: the Redis baseline and the ingest path.

use super::section::Section;
use super::table::{fmt_lag, fmt_rate, fmt_ratio, ratio, Table};
use crate::ingest::{IngestResults, GOAL_RATIO, SPREAD_STREAMS};
use crate::measure::micros_per;
use std::time::Duration;

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
