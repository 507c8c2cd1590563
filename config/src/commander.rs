//! `[commander]`: the service that sends commands to CSCs on behalf of
//! browsers.

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::validate::Problems;

/// `[commander]`: read by the commander role.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommanderConfig {
    /// TCP address of the commander's HTTP server, `"ip:port"`. Default
    /// `"0.0.0.0:8081"`, next to the frontend's 8080. Port 0 picks a free
    /// port (tests).
    pub listen: SocketAddr,

    /// How long a command may take before the caller is told it timed
    /// out, in milliseconds, 1 to 600000 (10 minutes). Default 10000:
    /// most commands are acknowledged within a second; raise it when a
    /// CSC has commands that legitimately run longer.
    pub command_timeout_ms: u64,
}

impl CommanderConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        problems.in_range(
            "commander.command_timeout_ms",
            self.command_timeout_ms,
            1..=600_000,
        );
    }
}

impl Default for CommanderConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8081)),
            command_timeout_ms: 10_000,
        }
    }
}
