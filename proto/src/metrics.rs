//! Prometheus text exposition (format 0.0.4), written by hand: every role
//! serves `/metrics` from its own counters, and this is the one place that
//! spells the format. Names follow `meridian_<what>_<unit>[_total]`;
//! labels come from bounded sets (role, csc, reason), never per-client ids.

use std::fmt::Write;

/// A `/metrics` page being written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

/// The media type of [`Exposition::finish`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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

    /// A value that goes up and down.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> &mut Self {
        self.family(name, help, "gauge");
        let _ = writeln!(self.text, "{name} {}", number(value));
        self
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

    pub fn finish(self) -> String {
        self.text
    }
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
}
