//! `[producer]`: the process beside a CSC that samples its topics and
//! sends them to ingest.

use std::collections::BTreeMap;

use meridian_proto::OnFull;
use serde::{Deserialize, Serialize};

use crate::csc::check_name;
use crate::validate::{key_path, Problems, MAX_RATE_HZ};

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
    /// at most 1000, e.g. `forceActuatorData = 50.0`; they override the
    /// rate a topic declares (see [`ProducerConfig::rate_hz`]). Default
    /// empty: every topic at its declared rate, or at
    /// `producer.telemetry_rate_hz` if it declares none.
    pub rates: BTreeMap<String, f64>,

    /// Most samples per frame sent to ingest, 1 to 65536. Default 256.
    pub batch_max: usize,

    /// Longest an event waits for its frame to fill to
    /// `producer.batch_max` events, in milliseconds, 0 to 1000. Default 5:
    /// a burst of events costs one frame (one acknowledgement, one store
    /// round trip) per `batch_max` events, for at most 5 ms of added
    /// latency; 0 sends every event as soon as it arrives. Telemetry does
    /// not wait: each sampling tick sends one frame.
    pub batch_delay_ms: u64,

    /// Serve every instance of `producer.csc` (its SAL index is ignored),
    /// e.g. every `Script` a ScriptQueue starts, each with a new index.
    /// Default false.
    pub all_indices: bool,

    /// Most events held while the ingest is unreachable or has not yet
    /// acknowledged them, 1 to 10000000. Default 100000: minutes of the
    /// busiest CSC's events.
    pub spool_events: usize,

    /// Most bytes of events held (estimated), 1024 to 17179869184. Default
    /// 67108864 (64 MiB). The spool is full at whichever bound comes first.
    pub spool_bytes: usize,

    /// What a full spool does with a new event: `"drop_newest"` keeps every
    /// spooled event and drops (and counts) new ones; `"drop_oldest"` drops
    /// the oldest to make room; `"block"` stops reading the CSC's events
    /// until there is room, leaving it to the middleware. Default
    /// `"drop_newest"`.
    pub spool_on_full: OnFull,

    /// Dedicated ingest pools: CSC name to the ingest addresses its
    /// producers use instead of `producer.ingest`, e.g. `MTM1M3 =
    /// ["ingest-m1m3:7400"]`, so the heaviest publishers have ingest
    /// managers of their own. A `ScriptQueue` pool also takes the `Script`
    /// producer (the Scripts the queue runs), unless `Script` has a pool of
    /// its own. Default empty.
    pub pools: BTreeMap<String, Vec<String>>,
}

/// CSCs whose traffic goes to the pool of the CSC that drives them, as
/// (driven, driver): every `Script` is started by a `ScriptQueue`, and its
/// events are the queue's workload, so a `ScriptQueue` pool must take them
/// too (the `Script` producer serves every index, so it has no queue index
/// to name a pool by).
pub const POOL_OF_DRIVER: &[(&str, &str)] = &[("Script", "ScriptQueue")];

impl ProducerConfig {
    /// The rate at which telemetry topic `topic` is sampled, in Hz: its
    /// entry in `producer.rates` if it has one (an operator's override),
    /// else the rate the topic declares (`declared`, from the middleware's
    /// schema) if that is a usable rate, else `producer.telemetry_rate_hz`.
    /// A declared rate above the producer's limit of 1000 Hz is sampled at
    /// 1000 Hz; a declared rate that is not a positive number is ignored.
    pub fn rate_hz(&self, topic: &str, declared: Option<f32>) -> f64 {
        if let Some(&hz) = self.rates.get(topic) {
            return hz;
        }
        match declared.map(f64::from) {
            Some(hz) if hz > 0.0 && hz.is_finite() => hz.min(MAX_RATE_HZ),
            _ => self.telemetry_rate_hz,
        }
    }

    /// The ingest addresses this producer uses: its CSC's pool if it has
    /// one, else the pool of the CSC that drives it (a Script's
    /// ScriptQueue, see [`POOL_OF_DRIVER`]), else `producer.ingest`.
    pub fn ingest_addresses(&self) -> &[String] {
        let name = self.csc.split(':').next().unwrap_or_default();
        let driver = POOL_OF_DRIVER
            .iter()
            .find(|(driven, _)| *driven == name)
            .map(|(_, driver)| *driver);
        self.pools
            .get(name)
            .or_else(|| driver.and_then(|d| self.pools.get(d)))
            .map(Vec::as_slice)
            .unwrap_or(&self.ingest)
    }

    pub(crate) fn check_more(&self, problems: &mut Problems) {
        problems.in_range("producer.spool_events", self.spool_events, 1..=10_000_000);
        problems.in_range("producer.spool_bytes", self.spool_bytes, 1024..=17_179_869_184);
        for (csc, addrs) in &self.pools {
            let key = key_path("producer.pools", csc);
            if let Err(reason) = check_name("CSC name", csc) {
                problems.push(
                    key.clone(),
                    "a CSC name of ASCII letters, digits and _",
                    format!("{csc:?} ({reason})"),
                );
            }
            if addrs.is_empty() {
                problems.push(
                    key.clone(),
                    "at least one ingest address \"host:port\"",
                    "an empty list",
                );
            }
            for (i, addr) in addrs.iter().enumerate() {
                if let Err(reason) = check_host_port(addr) {
                    problems.push(
                        format!("{key}[{i}]"),
                        "an address \"host:port\" (IPv6 as \"[addr]:port\") with a port from 1 to 65535",
                        format!("{addr:?} ({reason})"),
                    );
                }
            }
        }
    }
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
        self.check_more(problems);
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
            all_indices: false,
            spool_events: 100_000,
            spool_bytes: 64 * 1024 * 1024,
            spool_on_full: OnFull::DropNewest,
            pools: BTreeMap::new(),
        }
    }
}
