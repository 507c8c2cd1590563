//! `[log]`: how every role writes its log lines.

use serde::{Deserialize, Serialize};

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event: for terminals.
    #[default]
    Text,
    /// One JSON object per line: for log collectors.
    Json,
}

/// `[log]`: read by every role, before anything else starts.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `"text"` or `"json"`. Default `"text"`.
    pub format: LogFormat,

    /// Which events are logged: a `tracing` `EnvFilter` directive string,
    /// e.g. `"info"` or `"info,meridian_manager=debug"`. Default `"info"`:
    /// state changes, not per-sample traffic. The `RUST_LOG` environment
    /// variable, when set, replaces this value, so a level can be raised
    /// for one run without editing the file. Its syntax is checked when
    /// the binary builds the filter, not here (this crate does not depend
    /// on `tracing`).
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".to_string(),
        }
    }
}
