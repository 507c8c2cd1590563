//! The report's section of the night-like load: throughput, lag per hop,
//! and each role's CPU and memory.

use super::section::Section;
use super::table::{fmt_lag, fmt_rate, fmt_ratio, mib, ratio, Table};
use crate::measure::Percentiles;
use crate::night::{Hops, NightResults};

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

#[cfg(test)]
pub(super) mod tests {
    use super::super::section::summary_table;
    use super::*;
    use crate::night::RoleFigures;
    use std::time::Duration;

    pub(super) fn lag(p50: u64, p99: u64, max: u64, count: usize) -> Percentiles {
        Percentiles {
            count,
            p50: Duration::from_micros(p50),
            p99: Duration::from_micros(p99),
            max: Duration::from_micros(max),
        }
    }

    pub(crate) fn night() -> NightResults {
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
}
