//! A markdown table of the report, and how figures are written in its
//! cells: rates with thousands apart, ratios, lags in ms, memory in MiB.

use crate::measure::Percentiles;
use std::time::Duration;

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
/// `a ÷ b`, or `None` when it means nothing (no baseline, not a number).
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    let r = a / b;
    (b > 0.0 && r.is_finite()).then_some(r)
}

/// A ratio with two decimals, or `-`.
pub fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}"))
}

pub fn ms(d: Duration) -> f64 {
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

pub fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / (1u64 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_render_as_markdown_with_aligned_columns() {
        let mut t = Table::new(&[("name", false), ("rate", true)]);
        t.row(vec!["a".into(), fmt_rate(1234567.4)]);
        assert_eq!(t.markdown(), "| name | rate |\n|---|---:|\n| a | 1,234,567 |\n");
    }
}
