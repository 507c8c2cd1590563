//! What every request shares: [`AppState`] (middleware, tokens, rate
//! limiter, audit log, the commands in flight) and the [`CommanderStats`]
//! its requests count into.
//!
//! Built by [`crate::Commander::bind`], read by the routes and the relay;
//! it knows nothing of either.

use crate::audit::{AuditLog, Outcome};
use crate::auth::{Caller, Tokens};
use crate::error::RequestError;
use crate::rate::{AddressLimiter, RateLimiter};
use crate::refusal::{Refusal, Refusals};
use axum::http::HeaderMap;
use meridian_config::CommanderConfig;
use meridian_proto::metrics::Histogram;
use meridian_proto::throttle::whole_seconds;
use meridian_sim::Middleware;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;

/// What every request shares.
pub struct AppState {
    pub(crate) middleware: Arc<dyn Middleware>,
    pub(crate) config: CommanderConfig,
    pub(crate) tokens: Tokens,
    pub(crate) limiter: RateLimiter,
    /// Failed authentications per client address.
    pub(crate) addresses: AddressLimiter,
    /// Requests refused without a valid token, counted and sampled.
    pub(crate) refusals: Refusals,
    pub(crate) audit: AuditLog,
    /// Requests being processed (see [`crate::relay::process`]): awaited at shutdown.
    pub(crate) commands: TaskTracker,
    /// Outcomes and latencies, for `/metrics`.
    pub(crate) stats: CommanderStats,
    /// Origins whose pages may read answers (`frontend.allowed_origins`;
    /// empty: every origin).
    pub(crate) allowed_origins: Vec<String>,
}

impl AppState {
    /// Takes one request from `caller`'s bucket, or a 429.
    pub(crate) fn take_rate(&self, caller: &Caller) -> Result<(), RequestError> {
        self.limiter
            .take(&caller.name, caller.rate_per_s, caller.burst, Instant::now())
            .map_err(|wait| RequestError::RateLimited {
                retry_after_s: whole_seconds(wait),
            })
    }
}

impl AppState {
    /// Authenticates `headers` from `peer`: refused with 429 before any
    /// comparison if `peer` failed too often; a failure is charged to
    /// `peer` and counted. On refusal, also why (for sampling the audit).
    pub(crate) fn authenticate(
        &self,
        peer: IpAddr,
        headers: &HeaderMap,
    ) -> Result<Arc<Caller>, (Refusal, RequestError)> {
        let (rate_per_s, burst) = (
            self.config.address_rate_limit_per_s,
            self.config.address_rate_limit_burst,
        );
        let now = Instant::now();
        if let Err(wait) = self.addresses.check(peer, rate_per_s, burst, now) {
            return Err((
                Refusal::AddressRateLimited,
                RequestError::RateLimited {
                    retry_after_s: whole_seconds(wait),
                },
            ));
        }
        self.tokens.authenticate(headers).map_err(|error| {
            self.addresses.fail(peer, rate_per_s, burst, now);
            (crate::auth::refusal_of(headers), error)
        })
    }
}

/// Counters of the commander's requests, served at `/metrics`.
#[derive(Debug, Default)]
pub struct CommanderStats {
    pub(crate) complete: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) timeout: AtomicU64,
    pub(crate) refused: AtomicU64,
    /// Seconds from sending a command to the CSC to its final acknowledgement.
    pub(crate) csc_latency: Histogram,
}

impl CommanderStats {
    /// Counts one request's outcome; `csc` is how long the CSC took, if it was reached.
    pub(crate) fn record(&self, outcome: Outcome, csc: Option<Duration>) {
        let counter = match outcome {
            Outcome::Complete => &self.complete,
            Outcome::Failed => &self.failed,
            Outcome::Timeout => &self.timeout,
            Outcome::Refused => &self.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(d) = csc {
            self.csc_latency.observe(d.as_secs_f64());
        }
    }
}
