//! What a full bounded queue does with one more item: the one policy type of
//! every queue that can fill up between a CSC and the store (the producer's
//! event spool, `producer.spool_on_full`; the ingest's writer queues).
//! Each queue names its bound and its policy beside it, and says who pays.

use serde::{Deserialize, Serialize};

/// What a full queue does with one more item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// Keep every item already queued and drop the new one, counting it:
    /// the history up to the outage is complete, the newest is lost.
    DropNewest,
    /// Drop the oldest item to make room, counting it: the newest state
    /// wins, the start of the outage is lost.
    DropOldest,
    /// Refuse the item: whoever offers it waits (the producer stops reading
    /// its CSC's feed; an ingest stream reader stops reading its QUIC stream,
    /// and flow control stops the producer). Upstream pays.
    Block,
}
