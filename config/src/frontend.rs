//! `[frontend]`: the manager that serves browsers over HTTP and WebSocket.

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::validate::Problems;

/// `[frontend]`: read by the frontend role.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrontendConfig {
    /// TCP address of the HTTP and WebSocket server, `"ip:port"`. Default
    /// `"0.0.0.0:8080"`: every interface, since browsers run elsewhere.
    /// Port 0 picks a free port (tests).
    pub listen: SocketAddr,

    /// Bearer tokens a browser may present; any one of them is accepted.
    /// At least one, each non-empty without whitespace. Default
    /// `["dev-token"]`, which is public knowledge: replace it anywhere
    /// reachable from outside a development machine. Errors never echo a
    /// token.
    pub tokens: Vec<String>,

    /// Messages queued per browser, 16 to 1000000. Default 4096. When a
    /// browser reads slower than telemetry arrives and its queue is full,
    /// it is disconnected with a reason rather than slowing everyone else
    /// or growing memory; it can reconnect and recover from the store's
    /// history. The slow client pays, no one else.
    pub client_queue: usize,

    /// How long the shared store reader blocks waiting for new entries
    /// (`XREAD BLOCK`), in milliseconds, 1 to 10000. Default 100: bounds
    /// how late the reader notices a new subscription or shutdown; new
    /// data wakes it at once either way.
    pub read_block_ms: u64,

    /// Most entries read per stream in one read (`XREAD COUNT`), 1 to
    /// 100000. Default 256: keeps one busy stream from delaying the others
    /// in the same read.
    pub read_count: usize,
}

impl FrontendConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        if self.tokens.is_empty() {
            problems.push(
                "frontend.tokens",
                "at least one token (an empty list would lock every browser out)",
                "an empty list",
            );
        }
        for (i, token) in self.tokens.iter().enumerate() {
            let key = format!("frontend.tokens[{i}]");
            if token.is_empty() {
                problems.push(key, "a non-empty token without whitespace", "\"\"");
            } else if token.chars().any(char::is_whitespace) {
                problems.push(
                    key,
                    "a non-empty token without whitespace",
                    "a token containing whitespace",
                );
            }
        }
        problems.in_range("frontend.client_queue", self.client_queue, 16..=1_000_000);
        problems.in_range("frontend.read_block_ms", self.read_block_ms, 1..=10_000);
        problems.in_range("frontend.read_count", self.read_count, 1..=100_000);
    }
}

impl Default for FrontendConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8080)),
            tokens: vec!["dev-token".to_string()],
            client_queue: 4096,
            read_block_ms: 100,
            read_count: 256,
        }
    }
}
