//! The frontend's counters, written by the hub, the fan-out core, the
//! inboxes and the sessions, read by `/metrics`, the balancer and tests.
//! A leaf: it depends on no other frontend module, so all of them can use it.

use std::sync::atomic::{AtomicU64, AtomicUsize};

/// Counters of the hub's work (the read counter proves one read per stream).
#[derive(Debug, Default)]
pub struct HubStats {
    /// Entries read from the store by the shared reader.
    pub entries_read: AtomicU64,
    /// Samples handed to browsers (each sample of a shared tick counts once per browser).
    pub deliveries: AtomicU64,
    /// Ticks built: one per feed (set of browsers with the same live topics) per tick with data.
    pub ticks_built: AtomicU64,
    /// Ticks a browser that fell behind skipped: newer ticks it had queued carried all their topics.
    pub ticks_skipped: AtomicU64,
    /// Ticks a browser that fell behind took into its own queue (conflated, events kept).
    pub ticks_folded: AtomicU64,
    /// The most bytes any one browser's inbox has held (its bound is
    /// `frontend.client_bytes`).
    pub inbox_bytes_max: AtomicUsize,
    /// Events dropped for browsers whose inbox was full (each was told).
    pub events_lost: AtomicU64,
    /// Store → frontend hop of live samples: the shared reader's read time
    /// minus the ingest time (seconds).
    pub store_to_frontend: meridian_proto::metrics::Histogram,
    /// Frontend → browser hop: from a data frame's oldest sample being read
    /// to the browser's socket taking the frame (seconds), per frame.
    pub frontend_to_browser: meridian_proto::metrics::Histogram,
}
