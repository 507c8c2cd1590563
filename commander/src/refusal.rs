//! Requests refused before a caller was known: counted by [`Refusal`]
//! reason, logged sampled, and audited sampled, so a stranger's flood
//! costs a counter increment, not a log line or an audit entry each.
//!
//! Who is audited (the operator reviews these): every request that
//! presented a valid token, whatever its outcome (including 403 scope
//! refusals, 429 of the token's own limit, bad bodies), and, of requests
//! without a valid token, at most one per [`Refusal`] reason per
//! [`AUDIT_SAMPLE_INTERVAL`] (what was tried, from where). The others are
//! only counted (`meridian_commander_refused_total{reason}`) and summed
//! in at most one log line per reason per [`LOG_SAMPLE_INTERVAL`]. So
//! unauthenticated entries take at most 4 reasons × 144 a day (576 a
//! day, about 52,000 in the default 90-day `commander.audit_retention_days`)
//! of the audit stream, and accepted commands are not pushed out by a
//! flood of refused ones.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one log line per reason in this interval, with the count.
pub const LOG_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// At most one audit entry per reason in this interval for a request
/// without a valid token.
pub const AUDIT_SAMPLE_INTERVAL: Duration = Duration::from_secs(600);

/// Why a request without a valid token was refused: a bounded label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header.
    NoToken,
    /// An `Authorization` header that is not `Bearer <token>`.
    MalformedToken,
    /// A token that is not in `commander.tokens`.
    UnknownToken,
    /// The address failed too often (`commander.address_rate_limit_*`);
    /// its token was not compared.
    AddressRateLimited,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::NoToken,
        Refusal::MalformedToken,
        Refusal::UnknownToken,
        Refusal::AddressRateLimited,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NoToken => "no_token",
            Refusal::MalformedToken => "malformed_token",
            Refusal::UnknownToken => "unknown_token",
            Refusal::AddressRateLimited => "address_rate_limited",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Default)]
struct Sampled {
    last_log: Option<Instant>,
    unlogged: u64,
    last_audit: Option<Instant>,
}

/// Counts and samples of [`Refusal`]s.
#[derive(Default)]
pub struct Refusals {
    counts: [AtomicU64; 4],
    sampled: Mutex<[Sampled; 4]>,
}

impl Refusals {
    /// Counts one refusal at `now`, writes the sampled log line when due,
    /// and says whether this one is to be audited.
    pub fn record(&self, reason: Refusal, now: Instant) -> bool {
        self.counts[reason.index()].fetch_add(1, Ordering::Relaxed);
        let mut sampled = self.sampled.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut sampled[reason.index()];
        s.unlogged += 1;
        if s.last_log
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_SAMPLE_INTERVAL)
        {
            tracing::info!(
                reason = reason.label(),
                count = s.unlogged,
                "requests refused without a valid token (sampled: count since the last such line)"
            );
            s.last_log = Some(now);
            s.unlogged = 0;
        }
        let audit = s
            .last_audit
            .is_none_or(|t| now.saturating_duration_since(t) >= AUDIT_SAMPLE_INTERVAL);
        if audit {
            s.last_audit = Some(now);
        }
        audit
    }

    /// Refusals of `reason` so far.
    pub fn count(&self, reason: Refusal) -> u64 {
        self.counts[reason.index()].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_audit_per_reason_per_interval() {
        let r = Refusals::default();
        let t0 = Instant::now();
        assert!(r.record(Refusal::NoToken, t0));
        assert!(r.record(Refusal::UnknownToken, t0));
        for _ in 0..100 {
            assert!(!r.record(Refusal::UnknownToken, t0));
        }
        assert!(r.record(Refusal::UnknownToken, t0 + AUDIT_SAMPLE_INTERVAL));
        assert_eq!(r.count(Refusal::UnknownToken), 102);
        assert_eq!(r.count(Refusal::MalformedToken), 0);
    }
}
