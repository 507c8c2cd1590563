//! [`CommanderObserver`]: the commander's counters as Prometheus families
//! and its readiness, for the process's metrics listener and the
//! commander's own `GET /metrics`.

use crate::state::AppState;
use meridian_proto::metrics::{Exposition, Observe, ReadyCheck};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The commander as the process's metrics listener sees it (also served
/// at its own `GET /metrics` and `GET /readyz`).
pub struct CommanderObserver {
    pub(crate) state: Arc<AppState>,
}

impl Observe for CommanderObserver {
    fn role(&self) -> &'static str {
        "commander"
    }

    fn metrics(&self, page: &mut Exposition) {
        let s = &self.state.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        page.counters(
            "meridian_commander_requests_total",
            "Command requests by outcome (refused: before reaching the CSC: token, rate, schema, busy).",
            "outcome",
            &[
                ("complete", get(&s.complete)),
                ("failed", get(&s.failed)),
                ("timeout", get(&s.timeout)),
                ("refused", get(&s.refused)),
            ],
        )
        .counters(
            "meridian_commander_refused_total",
            "Requests refused without a valid token, by reason (address_rate_limited: refused before the token was compared); audited sampled only.",
            "reason",
            &crate::refusal::Refusal::ALL.map(|r| (r.label(), self.state.refusals.count(r))),
        )
        .gauge(
            "meridian_commander_in_flight",
            "Requests being processed now.",
            self.state.commands.len() as f64,
        )
        .histogram(
            "meridian_commander_csc_seconds",
            "From sending a command to the CSC to its final acknowledgement (or timeout).",
            &s.csc_latency,
        );
    }

    fn ready(&self) -> ReadyCheck<'_> {
        Box::pin(async move {
            let middleware = self.state.middleware.ready().await;
            let store = self
                .state
                .audit
                .reachable()
                .await
                .map_err(|_| "audit store unreachable".to_string());
            middleware.and(store)
        })
    }
}
