//! What the night-like load measured: rates stored and delivered, lag per
//! hop, and each role's share of the machine.

use crate::measure::Percentiles;
use crate::report::ratio;
use std::time::Duration;

/// One role's share of the machine over the window.
#[derive(Clone, Debug)]
pub struct RoleFigures {
    pub role: String,
    /// CPU over the window, in cores (1.0 = one core busy all the time).
    pub cores: f64,
    /// Resident memory at the end of the window and its largest value
    /// sampled each second, bytes.
    pub rss_end: u64,
    pub rss_max: u64,
}

/// Lag per hop of one category: end to end, source → ingest, ingest →
/// frontend read, frontend read → browser.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hops {
    pub end_to_end: Percentiles,
    pub source_ingest: Percentiles,
    pub ingest_frontend: Percentiles,
    pub frontend_browser: Percentiles,
}

/// Everything the night-like run measured.
#[derive(Clone, Debug)]
pub struct NightResults {
    pub cscs: Vec<String>,
    pub browsers: usize,
    pub wall: Duration,
    /// Per second, written to Redis by the ingest (each event once).
    pub stored_telemetry: f64,
    pub stored_events: f64,
    /// Per second, summed over every browser.
    pub delivered_telemetry: f64,
    pub delivered_events: f64,
    /// Events of the pseudo-CSCs the ingest derives (ScriptQueueState,
    /// ScriptHeartbeats), per second over every browser: not in the stored counter.
    pub delivered_derived: f64,
    pub telemetry: Hops,
    pub events: Hops,
    pub roles: Vec<RoleFigures>,
    /// Browsers closed by the server or whose connection failed, and lost-event notices received.
    pub closed: u64,
    pub lost_notices: u64,
}

impl NightResults {
    /// Delivered ÷ (stored × browsers): the share of what was stored that
    /// each browser received (telemetry is conflated per tick by design, so
    /// it may be a little under 1; every event should arrive).
    pub fn delivered_ratio(&self, telemetry: bool) -> Option<f64> {
        let (delivered, stored) = match telemetry {
            true => (self.delivered_telemetry, self.stored_telemetry),
            false => (self.delivered_events, self.stored_events),
        };
        ratio(delivered, stored * self.browsers as f64)
    }

    /// Sum of the roles' cores except the browsers'.
    pub fn system_cores(&self) -> f64 {
        self.roles
            .iter()
            .filter(|r| !r.role.starts_with("browsers"))
            .map(|r| r.cores)
            .sum()
    }
}
