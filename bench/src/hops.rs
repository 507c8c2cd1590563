//! The timestamps every native sample carries (`source_ts`, `ingest_ts`,
//! `frontend_ts`), read from a JSON batch frame as the lag of each hop.
//! Browsers parse frames by hand like this because a full JSON parse per
//! frame would make the load generator, not the server, the bottleneck.

/// A sample's `source_ts`, `ingest_ts` and `frontend_ts` in a JSON frame,
/// `rest` starting at the `source_ts` value, received at `now` (seconds):
/// its lag and the three hops (`[total, source→ingest, ingest→frontend,
/// frontend→browser]`), and what follows the three. Browsers parse frames
/// by hand like this because a full JSON parse per frame would make the load
/// generator, not the server, the bottleneck.
pub fn hops(rest: &str, now: f64) -> Option<([f64; 4], &str)> {
    let (source, after) = number(rest)?;
    let (ingest, after) = after.strip_prefix(",\"ingest_ts\":").and_then(number)?;
    let (frontend, after) = after.strip_prefix(",\"frontend_ts\":").and_then(number)?;
    Some((
        [now - source, ingest - source, frontend - ingest, now - frontend],
        after,
    ))
}

/// A JSON number at the start of `s`, and what follows it.
pub fn number(s: &str) -> Option<(f64, &str)> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(s.len());
    Some((s[..end].parse().ok()?, &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_reads_the_three_timestamps_and_returns_the_rest() {
        let (lags, rest) = hops(r#"10.0,"ingest_ts":10.5,"frontend_ts":11.25},{"x":1"#, 12.0).unwrap();
        assert_eq!(lags, [2.0, 0.5, 0.75, 0.75]);
        assert_eq!(rest, r#"},{"x":1"#);
        assert!(hops(r#"10.0,"frontend_ts":11.0"#, 12.0).is_none());
        assert!(hops("x", 12.0).is_none());
    }
}
