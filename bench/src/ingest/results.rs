//! What `ingest` measured per payload size: the redis-benchmark baselines,
//! the store writer alone, and the ingest path.

use crate::measure::{CpuSnapshot, Percentiles};
use std::time::Duration;

/// Everything `meridian-bench ingest` measured, for its tables and `meridian-bench all`'s report.
pub struct IngestResults {
    pub rows: Vec<Row>,
    pub producers: u32,
    pub redis_version: String,
}

/// The figures of one payload size.
pub struct Row {
    pub payload: usize,
    /// redis-benchmark over 1000 streams (`-r 1000`), the reference figure.
    pub spread: Baseline,
    /// redis-benchmark over as many streams as the ingest run writes (`-r K`).
    pub same_streams: Baseline,
    pub writer: Vec<WriterRun>,
    pub ingest: IngestRun,
}

pub struct Baseline {
    pub rps: f64,
    pub requests: u64,
    /// redis-server CPU per XADD.
    pub redis_cpu_us: f64,
}

pub struct WriterRun {
    pub in_flight: usize,
    pub rate: f64,
    /// This process's CPU per entry: the Redis client's share of the ingest's cost.
    pub cpu_us: f64,
}

pub struct IngestRun {
    pub rate: f64,
    pub latency: Percentiles,
    pub cpu: CpuSnapshot,
    pub wall: Duration,
    pub samples_in_window: u64,
    pub sent: u64,
    pub acked: u64,
    pub stored: u64,
    pub encode_us: f64,
    pub frame_bytes: f64,
}
