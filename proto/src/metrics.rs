//! Prometheus text exposition (format 0.0.4), written by hand: every role
//! serves `/metrics` from its own counters, and this is the one place that
//! spells the format. Names follow `meridian_<what>_<unit>[_total]`;
//! labels come from bounded sets (role, category, reason), never per-client ids.
//!
//! Also here, because every role needs them and they do no I/O:
//! [`Histogram`], a fixed-bucket histogram updated with atomics (lag per
//! hop, store latency), and [`Observe`], what a role hands to the process's
//! metrics listener (`metrics.listen`) so one `/metrics`, `/healthz` and
//! `/readyz` serve every role a process runs.

use std::fmt::Write;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

/// A `/metrics` page being written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

/// The media type of [`Exposition::finish`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds, in seconds, of the lag and latency histograms of every
/// role: from half a millisecond (a store round trip on one host) to 10 s
/// (a producer replaying after an outage), roughly ×2.5 apart.
pub const LAG_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// A value that only grows (`name` should end in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> &mut Self {
        self.family(name, help, "counter");
        let _ = writeln!(self.text, "{name} {value}");
        self
    }

    /// A value that only grows, not a whole number (e.g. CPU seconds).
    pub fn counter_f64(&mut self, name: &str, help: &str, value: f64) -> &mut Self {
        self.family(name, help, "counter");
        let _ = writeln!(self.text, "{name} {}", number(value));
        self
    }

    /// A value that goes up and down.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> &mut Self {
        self.family(name, help, "gauge");
        let _ = writeln!(self.text, "{name} {}", number(value));
        self
    }

    /// One counter per value of `label` (e.g. `category` = `event`, `telemetry`).
    pub fn counters(&mut self, name: &str, help: &str, label: &str, values: &[(&str, u64)]) -> &mut Self {
        self.family(name, help, "counter");
        for (value, n) in values {
            let _ = writeln!(self.text, "{name}{{{label}=\"{}\"}} {n}", escape(value));
        }
        self
    }

    /// One gauge per value of `label`.
    pub fn gauges(&mut self, name: &str, help: &str, label: &str, values: &[(&str, f64)]) -> &mut Self {
        self.family(name, help, "gauge");
        for (value, n) in values {
            let _ = writeln!(
                self.text,
                "{name}{{{label}=\"{}\"}} {}",
                escape(value),
                number(*n)
            );
        }
        self
    }

    /// A histogram (`name` should end in its unit, e.g. `_seconds`).
    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) -> &mut Self {
        self.family(name, help, "histogram");
        self.series(name, "", histogram);
        self
    }

    /// One histogram per value of `label`.
    pub fn histograms(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: &[(&str, &Histogram)],
    ) -> &mut Self {
        self.family(name, help, "histogram");
        for (value, histogram) in values {
            let labels = format!("{label}=\"{}\"", escape(value));
            self.series(name, &labels, histogram);
        }
        self
    }

    fn series(&mut self, name: &str, labels: &str, histogram: &Histogram) {
        let snapshot = histogram.snapshot();
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, n) in histogram.bounds.iter().zip(&snapshot.buckets) {
            cumulative += n;
            let _ = writeln!(
                self.text,
                "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cumulative}",
                number(*bound)
            );
        }
        let _ = writeln!(
            self.text,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            snapshot.count
        );
        let braces = |text: &str| match text.is_empty() {
            true => String::new(),
            false => format!("{{{text}}}"),
        };
        let _ = writeln!(self.text, "{name}_sum{} {}", braces(labels), number(snapshot.sum));
        let _ = writeln!(self.text, "{name}_count{} {}", braces(labels), snapshot.count);
    }

    fn family(&mut self, name: &str, help: &str, kind: &str) {
        debug_assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{name}"
        );
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// Appends another page (another role of the same process).
    pub fn append(&mut self, other: Exposition) {
        self.text.push_str(&other.text);
    }

    pub fn finish(self) -> String {
        self.text
    }
}

fn escape(label_value: &str) -> String {
    label_value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

/// A Prometheus histogram with fixed bucket bounds, updated from any
/// thread without a lock (one atomic add per bucket, count and sum). Memory
/// is fixed at creation: one counter per bound.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last is above every bound.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Sum of observations, in millionths of the unit.
    sum_micros: AtomicU64,
}

/// What a [`Histogram`] held at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Per bucket, not cumulative; one more than the bounds (the overflow).
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    /// A histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// A histogram over [`LAG_BUCKETS`], in seconds.
    pub fn lag() -> Histogram {
        Histogram::new(LAG_BUCKETS)
    }

    /// Records one observation. Negative values (clocks of two hosts a
    /// little apart) count as 0; NaN is ignored.
    pub fn observe(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        let value = value.max(0.0);
        let i = self.bounds.partition_point(|b| *b < value);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        // Saturating float-to-int conversion: an absurd value cannot wrap the sum.
        self.sum_micros.fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            buckets: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            count: self.count.load(Ordering::Relaxed),
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::lag()
    }
}

/// A readiness check in progress (see [`Observe::ready`]).
pub type ReadyCheck<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One role of a process, as its metrics listener sees it: the process
/// serves `/metrics` as every role's page in turn and `/readyz` as ready
/// only when every role is. Roles implement it; the binary serves it.
pub trait Observe: Send + Sync {
    /// The role's name, for logs and the `/readyz` body (`ingest`, `frontend`, …).
    fn role(&self) -> &'static str;
    /// Writes the role's metrics.
    fn metrics(&self, page: &mut Exposition);
    /// `Ok` when the role can do its work now; otherwise why not, in words
    /// an operator can act on (no secrets, no internal addresses).
    fn ready(&self) -> ReadyCheck<'_>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_help_type_and_value() {
        let mut e = Exposition::new();
        e.counter("meridian_x_total", "Things.\nMore", 3)
            .gauge("meridian_y", "Level", 1.5);
        assert_eq!(
            e.finish(),
            "# HELP meridian_x_total Things.\\nMore\n# TYPE meridian_x_total counter\nmeridian_x_total 3\n\
             # HELP meridian_y Level\n# TYPE meridian_y gauge\nmeridian_y 1.5\n"
        );
        assert_eq!(number(f64::INFINITY), "+Inf");
    }

    #[test]
    fn labelled_families_escape_their_values() {
        let mut e = Exposition::new();
        e.counters("meridian_z_total", "Z", "category", &[("event", 2), ("a\"b", 1)]);
        assert_eq!(
            e.finish(),
            "# HELP meridian_z_total Z\n# TYPE meridian_z_total counter\n\
             meridian_z_total{category=\"event\"} 2\nmeridian_z_total{category=\"a\\\"b\"} 1\n"
        );
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_sum_and_count() {
        static BOUNDS: &[f64] = &[0.1, 1.0];
        let h = Histogram::new(BOUNDS);
        for v in [0.05, 0.1, 0.5, 3.0, -1.0, f64::NAN] {
            h.observe(v);
        }
        assert_eq!(
            h.snapshot(),
            Snapshot {
                buckets: vec![3, 1, 1],
                count: 5,
                sum: 3.65
            }
        );
        let mut e = Exposition::new();
        e.histograms("meridian_lag_seconds", "Lag", "hop", &[("ingest", &h)]);
        let text = e.finish();
        assert!(
            text.contains("meridian_lag_seconds_bucket{hop=\"ingest\",le=\"0.1\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("meridian_lag_seconds_bucket{hop=\"ingest\",le=\"1\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("meridian_lag_seconds_bucket{hop=\"ingest\",le=\"+Inf\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("meridian_lag_seconds_sum{hop=\"ingest\"} 3.65\n"),
            "{text}"
        );
        assert!(
            text.contains("meridian_lag_seconds_count{hop=\"ingest\"} 5\n"),
            "{text}"
        );
        let mut e = Exposition::new();
        e.histogram("meridian_w_seconds", "W", &h);
        assert!(e.finish().contains("meridian_w_seconds_count 5\n"));
    }
}
