//! What a browser session knows of its frontend: the signal that ends a
//! drain, and the close codes a session ends with. A leaf, so the sessions
//! (native and LOVE) and the server that mounts them share it without
//! importing each other.

use meridian_proto::throttle::{self, AddressLimiter};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Wrong tokens or passwords one address may present in a burst on this
/// frontend's WebSocket endpoints (`/ws` and the LOVE endpoint together).
pub const AUTH_FAILURE_BURST: u32 = 10;
/// After the burst, wrong tokens one address may present per second
/// (one every 5 s). Until then its attempts are refused with
/// [`CLOSE_UNAUTHORIZED`] without comparing what it sent.
pub const AUTH_FAILURE_PER_S: f64 = 0.2;

/// WebSocket close code: the server is shutting down or rebalancing; reconnect (elsewhere) and recover.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code: the client stayed too slow for its subscriptions; reconnect, subscribe to less.
pub const CLOSE_LAGGED: u16 = 4001;
/// WebSocket close code: the client misbehaved (e.g. flooded requests without reading replies).
pub const CLOSE_BAD_REQUEST: u16 = 4002;
/// WebSocket close code: no valid token; the reason says what was wrong.
pub const CLOSE_UNAUTHORIZED: u16 = 4003;

/// What a connection needs to know about its frontend's life.
#[derive(Clone)]
pub struct Edge {
    /// Cancelled at the end of a drain: every browser still here is closed with 1001.
    pub closing: CancellationToken,
    /// Wrong tokens and passwords per client address (at most
    /// [`throttle::MAX_ADDRESSES`] addresses).
    pub auth_failures: Arc<AddressLimiter>,
}

impl Edge {
    /// A frontend's edge, not closing, with no failures yet.
    pub fn new() -> Edge {
        Edge {
            closing: CancellationToken::new(),
            auth_failures: Arc::new(AddressLimiter::default()),
        }
    }

    /// Whether `peer` may present a token now; if not, the close reason
    /// (saying when to retry). Compares nothing.
    pub fn may_try(&self, peer: IpAddr) -> Result<(), String> {
        self.auth_failures
            .check(peer, AUTH_FAILURE_PER_S, AUTH_FAILURE_BURST, Instant::now())
            .map_err(|wait| {
                format!(
                    "too many wrong tokens or passwords from this address: retry in {} s",
                    throttle::whole_seconds(wait)
                )
            })
    }

    /// Charges one wrong token or password to `peer`.
    pub fn failed(&self, peer: IpAddr) {
        self.auth_failures
            .fail(peer, AUTH_FAILURE_PER_S, AUTH_FAILURE_BURST, Instant::now());
    }
}

impl Default for Edge {
    fn default() -> Edge {
        Edge::new()
    }
}
