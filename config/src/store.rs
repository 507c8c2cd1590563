//! `[store]`: where telemetry and events live between ingest and the
//! browsers.

use serde::{Deserialize, Serialize};

use crate::validate::Problems;

/// Which store implementation a process uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// In-process streams. Only shared by roles running in the same
    /// process (`meridian up`), lost at exit: for development and tests.
    #[default]
    Memory,
    /// Redis streams at `store.redis_url`: shared by separate ingest and
    /// frontend processes, survives their restarts. Production.
    Redis,
}

/// `[store]`: read by ingest (writes) and frontend (reads).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `"memory"` or `"redis"`. Default `"memory"`, so `meridian up` runs
    /// with nothing else installed; separate ingest and frontend processes
    /// must both say `"redis"` to see the same data.
    pub backend: StoreBackend,

    /// Redis connection URL, `redis://` or `rediss://` (TLS), optionally
    /// with `user:password@` and a `/db` number. Default
    /// `"redis://127.0.0.1:6379/"`. Read only when `backend = "redis"`,
    /// but checked always, so a typo is caught before the switch.
    pub redis_url: String,

    /// Entries kept per telemetry stream (`XADD MAXLEN ~`), 1 to
    /// 10000000. Default 10000: at 50 Hz that is over three minutes of
    /// history for a browser that reconnects, at a bounded memory cost.
    /// Approximate trimming lets Redis keep slightly more.
    pub telemetry_maxlen: usize,

    /// Entries kept per event stream (`XADD MAXLEN ~`), 1 to 10000000.
    /// Default 100000: events are rare and each one matters to an
    /// operator reading the log, so keep far more of them than telemetry.
    pub event_maxlen: usize,
}

impl StoreConfig {
    const MAXLEN: std::ops::RangeInclusive<usize> = 1..=10_000_000;

    pub(crate) fn check(&self, problems: &mut Problems) {
        if !(self.redis_url.starts_with("redis://") || self.redis_url.starts_with("rediss://")) {
            problems.push(
                "store.redis_url",
                "a URL starting with redis:// or rediss://",
                format!("{:?}", self.redis_url),
            );
        }
        problems.in_range("store.telemetry_maxlen", self.telemetry_maxlen, Self::MAXLEN);
        problems.in_range("store.event_maxlen", self.event_maxlen, Self::MAXLEN);
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Memory,
            redis_url: "redis://127.0.0.1:6379/".to_string(),
            telemetry_maxlen: 10_000,
            event_maxlen: 100_000,
        }
    }
}
