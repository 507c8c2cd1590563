//! [`IngestStats`]: what the ingest counts while it runs, shared by the
//! connections, the store writer and the metrics page (which names them
//! for Prometheus). A leaf: it uses no other module of the ingest.

use meridian_proto::metrics::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};

/// Gauges, counters and histograms a test or the metrics page reads while
/// the ingest runs (see [`super::IngestObserver`] for their Prometheus
/// names).
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Batches (producer frames) read from producers and handed to the
    /// store writer, not yet stored: queued or being written. The ingest's
    /// own buffering; at most [`super::ACKS_IN_FLIGHT`] per producer
    /// stream and, per writer lane ([`super::writer::WRITER_LANES`]),
    /// [`super::writer::EVENT_QUEUE`] plus
    /// [`super::writer::TELEMETRY_QUEUE`] plus one pipeline, however long
    /// the store is down.
    pub batches_held: AtomicU64,
    /// Samples in those batches: received, not yet stored, not acknowledged.
    pub samples_held: AtomicU64,
    /// The most `batches_held` has been since the ingest started.
    pub batches_held_max: AtomicU64,
    /// Producers connected now (past the handshake).
    pub producers: AtomicU64,
    /// Producer connections accepted past the handshake since start.
    pub connections: AtomicU64,
    /// Producers refused at the handshake (identity, version, names, limit).
    pub refused: AtomicU64,
    /// Connections closed for a protocol error (malformed or undeclared input).
    pub protocol_errors: AtomicU64,
    /// Telemetry samples received from producers.
    pub telemetry_received: AtomicU64,
    /// Events received from producers (replays count again).
    pub events_received: AtomicU64,
    /// Telemetry samples written to the store.
    pub telemetry_stored: AtomicU64,
    /// Events written to the store (each once).
    pub events_stored: AtomicU64,
    /// Events received again (a producer's replay) and not written twice.
    pub events_duplicate: AtomicU64,
    /// Store writes that failed and were retried (the store was down or slow).
    pub store_retries: AtomicU64,
    /// Store writes failing now and being retried (0 while the store is fine).
    pub store_failing: AtomicU64,
    /// Seconds from a sample's source timestamp to its arrival here
    /// (CSC → producer → ingest), telemetry.
    pub telemetry_lag: Histogram,
    /// The same for events.
    pub event_lag: Histogram,
    /// Seconds per store write (one pipeline round trip, retries included).
    pub store_write: Histogram,
}

impl IngestStats {
    pub fn get(gauge: &AtomicU64) -> u64 {
        gauge.load(Ordering::Relaxed)
    }
}
