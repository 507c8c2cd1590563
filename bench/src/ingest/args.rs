//! The flags of `meridian-bench ingest` and the fixed figures its phases
//! and tables share (its own module, so that the phases need not import
//! their parent).

use clap::Args;

/// Thread-name prefix of the load generator's runtime (Linux keeps 15 bytes).
pub(super) const LOAD_THREADS: &str = "bench-load";

/// Streams of the reference baseline (`redis-benchmark -r 1000`): many
/// topics, as a site has.
pub const SPREAD_STREAMS: u32 = 1000;

/// The goal this bench tracks: the bridge keeps at least this fraction of
/// what Redis itself takes with a well-pipelined client.
pub const GOAL_RATIO: f64 = 0.5;

#[derive(Args, Debug, Clone)]
pub struct IngestArgs {
    /// Seconds each payload size streams through the ingest (after a 0.5 s warm-up).
    #[arg(long, default_value_t = 5.0, value_name = "S")]
    pub(super) duration_s: f64,
    /// Synthetic producers, each with its own QUIC connection and CSC (`Bench:<i>`).
    #[arg(long, default_value_t = 4, value_name = "K")]
    pub(super) producers: u32,
    /// Samples per Batch frame.
    #[arg(long, default_value_t = 256, value_name = "B")]
    pub(super) batch: usize,
    /// Batch frames a producer may have sent but not yet had acknowledged.
    #[arg(long, default_value_t = 8, value_name = "FRAMES")]
    pub(super) window: usize,
    /// Stored payload sizes in bytes (the `f` field: the sample's fields as JSON).
    #[arg(long, value_delimiter = ',', default_value = "200,4096", value_name = "BYTES")]
    pub(super) payload: Vec<usize>,
    /// Seconds each redis-benchmark baseline should take.
    #[arg(long, default_value_t = 3.0, value_name = "S")]
    pub(super) baseline_s: f64,
    /// Seconds of each store-writer-alone measurement.
    #[arg(long, default_value_t = 1.5, value_name = "S")]
    pub(super) writer_s: f64,
    /// Stream retention of both the baseline and the ingest (`MAXLEN ~`, store.telemetry_maxlen).
    #[arg(long, default_value_t = 10_000)]
    pub(super) maxlen: usize,
    /// ingest.batch_max for the ingest under test (default: the configuration's default).
    #[arg(long, value_name = "ENTRIES")]
    pub(super) batch_max: Option<usize>,
    /// ingest.batch_delay_ms for the ingest under test (default: the configuration's default).
    #[arg(long, value_name = "MS")]
    pub(super) batch_delay_ms: Option<u64>,
    /// Worker threads of the producers' runtime (the ingest uses the main runtime's).
    #[arg(long, default_value_t = 2)]
    pub(super) load_threads: usize,
}
