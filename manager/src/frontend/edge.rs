//! What a browser session knows of its frontend: the signal that ends a
//! drain, and the close codes a session ends with. A leaf, so the sessions
//! (native and LOVE) and the server that mounts them share it without
//! importing each other.

use tokio_util::sync::CancellationToken;

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
}
