//! Meridian's configuration: one typed, documented TOML file for every role
//! of the `meridian` binary.
//!
//! This crate owns the shape of the file (one struct per `[section]`, one
//! documented field per key, a default for each so an empty file, or none,
//! is valid), the rules a value must meet, and the errors that name the
//! offending key. The `examples/` directory holds one complete file per
//! role; a test keeps them parsing.
//!
//! It must not do I/O beyond reading the one file handed to
//! [`Config::load`]: it does not open the certificate paths it holds,
//! resolve addresses, or connect anywhere. Roles do that and report their
//! own errors. It has no tokio, tracing or network dependency.
//!
//! Validation collects every problem rather than stopping at the first,
//! each named by its full key path (`frontend.client_queue: expected an
//! integer from 16 to 1000000, found 3`). [`Config::from_toml_str`] and
//! [`Config::load`] validate; after applying command-line overrides,
//! call [`Config::validate`] again.
//!
//! Layout:
//! - [`error`]: [`ConfigError`] and [`Invalid`], one problem at one key.
//! - [`csc`]: [`parse_csc`], the `NAME` / `NAME:INDEX` form of a CSC.
//! - [`store`], [`tls`], [`ingest`], [`frontend`], [`producer`],
//!   [`commander`], [`sim`], [`log`], [`metrics`]: one `[section]` each, with its checks.
//! - `validate`: the collector the checks write into.
//! - `locate`: finds the key path of a parse error's position.

pub mod commander;
pub mod csc;
pub mod error;
pub mod frontend;
pub mod ingest;
mod locate;
pub mod log;
pub mod metrics;
pub mod producer;
pub mod sim;
pub mod store;
pub mod tls;
mod validate;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use commander::CommanderConfig;
pub use csc::{parse_csc, MAX_CSC_NAME_LEN};
pub use error::{ConfigError, Invalid};
pub use frontend::FrontendConfig;
pub use ingest::IngestConfig;
pub use log::{LogConfig, LogFormat};
pub use metrics::MetricsConfig;
pub use producer::ProducerConfig;
pub use sim::SimConfig;
pub use store::{StoreBackend, StoreConfig};
pub use tls::TlsConfig;

/// The whole configuration file. Each role reads the sections it needs and
/// ignores the others, so one file can configure a whole site, and
/// `meridian up` reads them all.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[store]`: where samples live between ingest and browsers (ingest,
    /// frontend).
    pub store: StoreConfig,
    /// `[tls]`: certificates of the producer ↔ ingest QUIC link (ingest,
    /// producer).
    pub tls: TlsConfig,
    /// `[ingest]`: the QUIC endpoint producers send to (ingest).
    pub ingest: IngestConfig,
    /// `[frontend]`: the HTTP/WebSocket server browsers connect to
    /// (frontend).
    pub frontend: FrontendConfig,
    /// `[producer]`: which CSC to sample, at what rates, sent where
    /// (producer).
    pub producer: ProducerConfig,
    /// `[commander]`: the command service (commander).
    pub commander: CommanderConfig,
    /// `[sim]`: simulated CSCs (simulator).
    pub sim: SimConfig,
    /// `[log]`: log format and filter (every role).
    pub log: LogConfig,
    /// `[metrics]`: the `/metrics`, `/healthz`, `/readyz` listener (every
    /// role but the simulator).
    pub metrics: MetricsConfig,
}

impl Config {
    /// Parses `text` as TOML and validates it. Missing sections and keys
    /// take their defaults; unknown keys are an error (they are usually
    /// typos that would otherwise be silently ignored).
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: None,
            message: parse_message(text, &err),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the file at `path` and does what [`Config::from_toml_str`]
    /// does. Errors name the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|err| match err {
            ConfigError::Parse { path: None, message } => ConfigError::Parse {
                path: Some(path.to_path_buf()),
                message,
            },
            other => other,
        })
    }

    /// Checks every value against its documented rules, reporting all
    /// problems at once, in section and field order.
    /// Call it again after changing a loaded configuration (command-line
    /// overrides).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = validate::Problems::default();
        self.store.check(&mut problems);
        self.tls.check(&mut problems);
        self.ingest.check(&mut problems);
        self.frontend.check(&mut problems);
        self.producer.check(&mut problems);
        self.commander.check(&mut problems);
        self.sim.check(&mut problems);
        let problems = problems.into_vec();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// toml's message (line, column, the offending text), then the full key
/// path when the position can be traced to a key.
fn parse_message(text: &str, err: &toml::de::Error) -> String {
    let mut message = err.to_string().trim_end().to_string();
    if let Some(key) = err.span().and_then(|span| locate::key_path_at(text, span.start)) {
        message.push_str(&format!("\nin `{key}`"));
    }
    message
}

#[cfg(test)]
mod tests;
