//! `[ingest]`: the manager that accepts producers over QUIC and writes to
//! the store.

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::validate::Problems;

/// `[ingest]`: read by the ingest role.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// UDP address the QUIC endpoint binds, `"ip:port"`. Default
    /// `"0.0.0.0:7400"`: every interface, since producers run on other
    /// hosts. Port 0 picks a free port (tests).
    pub listen: SocketAddr,

    /// Most samples written to the store in one pipeline (round trip), 1
    /// to 65536. Default 512: large enough that Redis round trips are not
    /// the bottleneck, small enough that one batch is a few hundred KB.
    pub batch_max: usize,

    /// Longest a sample waits for its batch to fill, in milliseconds, 0 to
    /// 1000. Default 5: adds at most 5 ms of latency; 0 writes every sample
    /// as soon as it arrives (more round trips).
    pub batch_delay_ms: u64,

    /// Most producer connections served at once, at least 1. Default 1024,
    /// well above the number of CSC instances at the observatory: the bound
    /// is there to cap the memory a misbehaving client can make ingest
    /// spend, not to ration real producers.
    pub max_producers: usize,
    /// How long a finished Script's state stays in the store, in seconds,
    /// 1 to 604800. Every Script shares one stream per topic; only its small
    /// per-run state hash is its own, and it expires this long after the
    /// Script ends. Default 3600: an hour to look back at what ran.
    pub script_ttl_s: u64,
    /// How often the sweeper looks for per-Script state left behind (a
    /// Script whose end was never seen), in seconds, 1 to 86400. One ingest
    /// manager sweeps at a time, holding a lock in the store. Default 60.
    pub sweep_interval_s: u64,
    /// A Script's state not updated for this long is swept even though its
    /// end was never seen, in seconds, 60 to 2592000. Default 86400 (a night
    /// and a day: no Script runs that long).
    pub script_max_age_s: u64,
    /// How long the store remembers the last sequence number written for a
    /// producer (what makes a replay after a reconnect exactly-once), in
    /// seconds, 60 to 2592000. Must exceed the longest outage a producer's
    /// spool rides out. Default 86400.
    pub dedup_ttl_s: u64,
    /// Whether ingest managers derive the replaced system's ScriptQueue
    /// pseudo-CSCs (`ScriptQueueState`, `ScriptHeartbeats`) from the
    /// ScriptQueue and Script events Meridian producers store, so its
    /// browser client keeps its ScriptQueue panel. One ingest derives at a
    /// time (a lock in the store). Default true; false when no such client
    /// is in use.
    pub script_queue_state: bool,
    /// Finished scripts listed in `ScriptQueueState`'s `scriptsStream`, 1 to
    /// 400 (a `queue` event lists at most 400). Default 10, the replaced
    /// producer's `FINISHED_SCRIPTS_LIST_SIZE`: each message carries every
    /// listed script whole.
    pub finished_scripts: usize,
    /// Longest a stopping ingest waits for what it received to reach the
    /// store, in milliseconds, 100 to 600000. A store still down at the end
    /// is reported with the number of samples not stored (never
    /// acknowledged: producers replay their events to another ingest; that
    /// telemetry is lost) and the ingest exits with an error instead of
    /// waiting forever. Default 10000: well inside a service manager's stop
    /// timeout (30 s in deploy/).
    pub drain_timeout_ms: u64,
}

impl IngestConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        problems.in_range("ingest.batch_max", self.batch_max, 1..=65_536);
        problems.in_range("ingest.batch_delay_ms", self.batch_delay_ms, 0..=1000);
        problems.at_least("ingest.max_producers", self.max_producers, 1);
        problems.in_range("ingest.script_ttl_s", self.script_ttl_s, 1..=604_800);
        problems.in_range("ingest.sweep_interval_s", self.sweep_interval_s, 1..=86_400);
        problems.in_range("ingest.script_max_age_s", self.script_max_age_s, 60..=2_592_000);
        problems.in_range("ingest.dedup_ttl_s", self.dedup_ttl_s, 60..=2_592_000);
        problems.in_range("ingest.finished_scripts", self.finished_scripts, 1..=400);
        problems.in_range("ingest.drain_timeout_ms", self.drain_timeout_ms, 100..=600_000);
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 7400)),
            batch_max: 512,
            batch_delay_ms: 5,
            max_producers: 1024,
            script_ttl_s: 3600,
            sweep_interval_s: 60,
            script_max_age_s: 86_400,
            dedup_ttl_s: 86_400,
            script_queue_state: true,
            finished_scripts: 10,
            drain_timeout_ms: 10_000,
        }
    }
}
