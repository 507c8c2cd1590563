//! How `meridian-bench ingest` run alone prints its figures: the
//! throughput against redis-benchmark, where the time goes, and the goal.

use super::args::{IngestArgs, GOAL_RATIO, SPREAD_STREAMS};
use super::results::Row;
use crate::measure::{core_percent, micros_per};
use std::time::Duration;

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(super) fn print_report(rows: &[Row], args: &IngestArgs, cores: usize) {
    let k = args.producers;
    println!();
    println!(
        "| payload | redis-benchmark XADD -P64, {SPREAD_STREAMS} streams (/s) | ingest path, {k} streams (samples/s) \
         | ratio | redis-benchmark, {k} streams (/s) | ratio vs {k} streams | ack p50 (ms) | ack p99 (ms) \
         | process CPU (µs/sample) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let i = &r.ingest;
        println!(
            "| {} B | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} | {:.1} | {:.1} | {:.1} |",
            r.payload,
            r.spread.rps,
            i.rate,
            i.rate / r.spread.rps,
            r.same_streams.rps,
            i.rate / r.same_streams.rps,
            ms(i.latency.p50),
            ms(i.latency.p99),
            micros_per(i.cpu.process, i.samples_in_window),
        );
    }
    println!();
    println!(
        "Where the time goes in the ingest run (% of one core of {cores}, and µs per sample), \
         and the store writer alone (RedisStore::append of ingest.batch_max entries, no QUIC):"
    );
    println!();
    println!(
        "| payload | ingest threads | producer threads | redis-server | redis µs/XADD: -r {SPREAD_STREAMS} / -r {k} / ingest \
         | encode µs/sample | wire B/sample | writer alone, 1 in flight | 4 in flight |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let i = &r.ingest;
        let writer = |n: usize| {
            r.writer
                .iter()
                .find(|w| w.in_flight == n)
                .map_or("-".to_string(), |w| {
                    format!("{:.0}/s, {:.1} µs CPU", w.rate, w.cpu_us)
                })
        };
        println!(
            "| {} B | {:.0}% ({:.1} µs) | {:.0}% ({:.1} µs) | {:.0}% ({:.1} µs) | {:.1} / {:.1} / {:.1} | {:.2} | {:.0} | {} | {} |",
            r.payload,
            core_percent(i.cpu.under_test(), i.wall),
            micros_per(i.cpu.under_test(), i.samples_in_window),
            core_percent(i.cpu.load, i.wall),
            micros_per(i.cpu.load, i.samples_in_window),
            core_percent(i.cpu.redis, i.wall),
            micros_per(i.cpu.redis, i.samples_in_window),
            r.spread.redis_cpu_us,
            r.same_streams.redis_cpu_us,
            micros_per(i.cpu.redis, i.samples_in_window),
            i.encode_us,
            i.frame_bytes,
            writer(1),
            writer(4),
        );
    }
    println!();
    for r in rows {
        let i = &r.ingest;
        println!(
            "{} B: sent {} samples, acknowledged {}, in Redis {} (XINFO entries-added): {}",
            r.payload,
            i.sent,
            i.acked,
            i.stored,
            if i.stored >= i.acked {
                "nothing acknowledged was lost"
            } else {
                "LOST DATA"
            }
        );
    }
    let verdicts: Vec<String> = rows
        .iter()
        .map(|r| {
            let ratio = r.ingest.rate / r.spread.rps;
            let verdict = if ratio >= GOAL_RATIO { "met" } else { "NOT met" };
            format!("{} B {ratio:.2} ({verdict})", r.payload)
        })
        .collect();
    println!(
        "Goal: ingest path ÷ redis-benchmark ({SPREAD_STREAMS} streams) ≥ {GOAL_RATIO}: {}.",
        verdicts.join(", "),
    );
}
