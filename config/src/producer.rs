//! `[producer]`: the process beside a CSC that samples its topics and
//! sends them to ingest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::csc::check_name;
use crate::validate::{key_path, Problems};

/// `[producer]`: read by the producer role.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerConfig {
    /// The CSC instance this producer serves, `"NAME"` or `"NAME:INDEX"`
    /// (see [`crate::parse_csc`]). Default `"Test:1"`, the simulator's
    /// test CSC.
    pub csc: String,

    /// Ingest addresses, `"host:port"` (IPv6 as `"[addr]:port"`), tried in
    /// order, so a producer can fail over to a second ingest. At least one.
    /// Default `["127.0.0.1:7400"]`, the ingest of a local `meridian up`.
    pub ingest: Vec<String>,

    /// Sampling rate of telemetry topics that declare no rate of their own
    /// and have no entry in `producer.rates`, in Hz, greater than 0 and at
    /// most 1000. A topic that declares its rate (M1M3's 50 Hz forces) is
    /// sampled at that rate: operators see what the device publishes, not
    /// a 2 s poll. Default 10.
    pub telemetry_rate_hz: f64,

    /// Per-topic sampling rates, topic name to Hz, each greater than 0 and
    /// at most 1000, e.g. `forceActuatorData = 50.0`. Default empty: every
    /// topic at `producer.telemetry_rate_hz`.
    pub rates: BTreeMap<String, f64>,

    /// Most samples per frame sent to ingest, 1 to 65536. Default 256.
    pub batch_max: usize,

    /// Longest a sample waits for its frame to fill, in milliseconds, 0 to
    /// 1000. Default 5: at most 5 ms of added latency; 0 sends each sample
    /// in its own frame.
    pub batch_delay_ms: u64,
}

impl ProducerConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        problems.csc("producer.csc", &self.csc);
        if self.ingest.is_empty() {
            problems.push(
                "producer.ingest",
                "at least one ingest address \"host:port\"",
                "an empty list",
            );
        }
        for (i, addr) in self.ingest.iter().enumerate() {
            if let Err(reason) = check_host_port(addr) {
                problems.push(
                    format!("producer.ingest[{i}]"),
                    "an address \"host:port\" (IPv6 as \"[addr]:port\") with a port from 1 to 65535",
                    format!("{addr:?} ({reason})"),
                );
            }
        }
        problems.rate_hz("producer.telemetry_rate_hz", self.telemetry_rate_hz);
        for (topic, &rate) in &self.rates {
            let key = key_path("producer.rates", topic);
            if let Err(reason) = check_name("topic name", topic) {
                problems.push(
                    key.clone(),
                    "a topic name of ASCII letters, digits and _",
                    format!("{topic:?} ({reason})"),
                );
            }
            problems.rate_hz(&key, rate);
        }
        problems.in_range("producer.batch_max", self.batch_max, 1..=65_536);
        problems.in_range("producer.batch_delay_ms", self.batch_delay_ms, 0..=1000);
    }
}

/// `host:port` with a non-empty host and a non-zero port; a host with a
/// `:` must be a bracketed IPv6 address.
fn check_host_port(addr: &str) -> Result<(), &'static str> {
    let (host, port) = addr.rsplit_once(':').ok_or("no port")?;
    if host.is_empty() {
        return Err("no host");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("an IPv6 address must be in brackets");
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("the port is not a number from 1 to 65535"),
        Ok(_) if !port.bytes().all(|b| b.is_ascii_digit()) => Err("the port is not a number from 1 to 65535"),
        Ok(_) => Ok(()),
    }
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            csc: "Test:1".to_string(),
            ingest: vec!["127.0.0.1:7400".to_string()],
            telemetry_rate_hz: 10.0,
            rates: BTreeMap::new(),
            batch_max: 256,
            batch_delay_ms: 5,
        }
    }
}
