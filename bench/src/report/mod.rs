//! The markdown report of `meridian-bench all`: the machine, the run, a
//! summary table and one section per measurement, each with its baseline
//! from the same run and the ratio. Everything here is pure (results in,
//! text out) so the layout is tested without running anything; `all.rs`
//! gathers the results and the machine's description.
//!
//! Layout:
//! - this file: the report, its header (machine, date, load) and the summary table.
//! - `section`: one section of the report, and the summary table's columns.
//! - `table`: a markdown table and how figures are written in it.
//! - `ingest`, `fanout`, `night`, `love`: each measurement's section and summary rows.

mod fanout;
mod ingest;
mod love;
mod night;
mod section;
mod table;

pub use fanout::fanout_section;
pub use ingest::ingest_sections;
pub use love::{love_section, parse_love, LoveResults};
pub use night::night_section;
pub use section::{summary_table, Section};
pub use table::{ratio, Table};

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
    use super::night::tests::night;
    use super::table::{fmt_lag, fmt_rate, fmt_ratio};
    use super::*;
    use crate::measure::Percentiles;

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
            command: "meridian-bench all".into(),
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
}
