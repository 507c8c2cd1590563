//! The collector every section's check writes into, so that one run of
//! [`crate::Config::validate`] reports every problem, not just the first.

use std::fmt::Display;
use std::ops::RangeInclusive;

use crate::csc::parse_csc;
use crate::error::Invalid;

/// Problems found so far, in the order the checks ran (section order, then
/// field order), which is the order an operator reads the file in.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<Invalid>);

/// Highest sampling rate accepted anywhere, in Hz. The fastest topics at
/// the observatory publish at 50 Hz; 1 kHz leaves room without letting a
/// typo (`10000`) flood ingest.
pub(crate) const MAX_RATE_HZ: f64 = 1000.0;

impl Problems {
    pub(crate) fn into_vec(self) -> Vec<Invalid> {
        self.0
    }

    /// Records a problem at `key`.
    pub(crate) fn push(
        &mut self,
        key: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) {
        self.0.push(Invalid {
            key: key.into(),
            expected: expected.into(),
            found: found.into(),
        });
    }

    /// An integer that must lie in `range` (inclusive at both ends).
    pub(crate) fn in_range<T: PartialOrd + Display>(
        &mut self,
        key: &str,
        value: T,
        range: RangeInclusive<T>,
    ) {
        if !range.contains(&value) {
            let expected = format!("an integer from {} to {}", range.start(), range.end());
            self.push(key, expected, value.to_string());
        }
    }

    /// An integer that must be at least `min`.
    pub(crate) fn at_least<T: PartialOrd + Display>(&mut self, key: &str, value: T, min: T) {
        if value < min {
            self.push(key, format!("an integer of at least {min}"), value.to_string());
        }
    }

    /// A sampling rate in Hz: in (0, [`MAX_RATE_HZ`]]. NaN fails too.
    pub(crate) fn rate_hz(&mut self, key: &str, value: f64) {
        if !(value > 0.0 && value <= MAX_RATE_HZ) {
            self.push(
                key,
                format!("a rate in Hz greater than 0 and at most {MAX_RATE_HZ}"),
                value.to_string(),
            );
        }
    }

    /// A CSC instance as `NAME` or `NAME:INDEX`; returns it when valid so
    /// the caller can look for duplicates.
    pub(crate) fn csc(&mut self, key: &str, value: &str) -> Option<(String, u32)> {
        match parse_csc(value) {
            Ok(csc) => Some(csc),
            Err(reason) => {
                self.push(
                    key,
                    format!(
                        "a CSC as NAME or NAME:INDEX (NAME: ASCII letters, digits and _; INDEX: 0 to {})",
                        u32::MAX
                    ),
                    format!("{value:?} ({reason})"),
                );
                None
            }
        }
    }
}

/// Appends one key to a TOML key path, quoting it when TOML would
/// (`producer.rates."a.b"`), so the path can be pasted back into a file.
pub(crate) fn key_path(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        format!("{parent}.{key}")
    } else {
        format!("{parent}.{key:?}")
    }
}
