//! The flags of `meridian-bench fanout` and the fixed figures its parts
//! share: runtime thread names, timings, the goal (its own module, so that
//! the parts need not import their parent).

use clap::Args;
use meridian_proto::browser::FrameFormat;
use std::time::Duration;

/// Thread-name prefixes of the runtimes (Linux keeps 15 bytes of a name).
pub(super) const FRONT_THREADS: &str = "bench-front";
pub(super) const BARE_THREADS: &str = "bench-bare";
pub(super) const INGEST_THREADS: &str = "bench-ingest";
pub(super) const PRODUCER_THREADS: &str = "bench-prod";

/// The CSC whose telemetry the producers publish.
pub(super) const CSC: &str = "MTM1M3";

/// Time for the RSS to settle after the clients connected, and for the
/// frontend to forget the clients of the previous run.
pub(super) const SETTLE: Duration = Duration::from_secs(1);

/// Longest wait for the server to become idle after a run's clients left.
pub(super) const QUIET_TIMEOUT: Duration = Duration::from_secs(30);

/// Data flows this long before the measurement window opens.
pub(super) const WARMUP: Duration = Duration::from_secs(1);

/// The goal this bench tracks (issue 5): this many clients on at most one
/// frontend core, with p99 producer → client lag under `GOAL_P99`, and
/// (so that conflation does not hide an overload) at least
/// `GOAL_DELIVERED` of the offered samples delivered.
pub const GOAL_CLIENTS: usize = 1000;
pub const GOAL_P99: Duration = Duration::from_millis(20);
pub const GOAL_CORES: f64 = 1.0;
pub const GOAL_DELIVERED: f64 = 0.99;

#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Client counts to measure, one pair of runs (frontend, bare broadcast) each.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,1000,5000",
        value_name = "N"
    )]
    pub(super) clients: Vec<usize>,
    /// Telemetry topics every client subscribes to (MTM1M3's 50 Hz topics over instances 1, 2, …).
    #[arg(long, default_value_t = 50, value_name = "T")]
    pub(super) topics: usize,
    /// Samples per second of each topic.
    #[arg(long, default_value_t = 50.0, value_name = "HZ")]
    pub(super) rate_hz: f64,
    /// Seconds of each measurement window (after a 1 s warm-up).
    #[arg(long, default_value_t = 5.0, value_name = "S")]
    pub(super) duration_s: f64,
    /// Clients that parse every sample's timestamps for the lag figures (the others only count).
    #[arg(long, default_value_t = 50, value_name = "K")]
    pub(super) lag_clients: usize,
    /// frontend.tick_ms under test; also the bare broadcast's period, if slower than the topics' (default: the configuration's).
    #[arg(long, value_name = "MS")]
    pub(super) tick_ms: Option<u64>,
    /// Worker threads of the frontend's runtime (and of the bare server's): the cores it may use.
    #[arg(long, default_value_t = 1, value_name = "THREADS")]
    pub(super) frontend_threads: usize,
    /// Idle clients of the memory measurement made before any data flows (0: none).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub(super) memory_clients: usize,
    /// Producers publish in step (all topics at the same instant) instead of at spread phases.
    #[arg(long)]
    pub(super) aligned: bool,
    /// Pin the server threads and redis-server to the first core and the clients to the last (taskset).
    #[arg(long)]
    pub(super) pin: bool,
    /// Data frames as `json` text or `msgpack` binary (docs/protocol.md), for the frontend and the bare server alike.
    #[arg(long, default_value = "json", value_parser = parse_format)]
    pub(super) format: FrameFormat,
}

fn parse_format(s: &str) -> Result<FrameFormat, String> {
    s.parse()
}
