//! Stream entry ids, `<milliseconds>-<sequence>`, as Redis assigns them.
//!
//! The in-memory store assigns ids with the same rule, so a browser's
//! "last id seen" means the same thing whichever store is behind it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    /// Smaller than every id a store assigns: "read from the start".
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    pub fn new(ms: u64, seq: u64) -> Self {
        StreamId { ms, seq }
    }

    /// The id a store assigns next after `self`, given the clock reads `now_ms`:
    /// time moves forward, and within one millisecond the sequence counts up.
    pub fn next(self, now_ms: u64) -> StreamId {
        if now_ms > self.ms {
            StreamId { ms: now_ms, seq: 0 }
        } else {
            StreamId {
                ms: self.ms,
                seq: self.seq + 1,
            }
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Why a string is not a stream id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream id {0:?} is not of the form <milliseconds>-<sequence>")]
pub struct BadStreamId(pub String);

impl FromStr for StreamId {
    type Err = BadStreamId;
    fn from_str(s: &str) -> Result<Self, BadStreamId> {
        let bad = || BadStreamId(s.chars().take(64).collect());
        let (ms, seq) = match s.split_once('-') {
            Some((ms, seq)) => (ms, seq),
            None => (s, "0"),
        };
        Ok(StreamId {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_order_like_redis() {
        let id: StreamId = "1700000000000-5".parse().unwrap();
        assert_eq!(id.to_string(), "1700000000000-5");
        assert!(id < "1700000000001-0".parse().unwrap());
        assert_eq!(id.next(1700000000000), StreamId::new(1700000000000, 6));
        // A clock that went backwards never produces a smaller id.
        assert_eq!(id.next(5), StreamId::new(1700000000000, 6));
        assert_eq!(id.next(1700000000009), StreamId::new(1700000000009, 0));
        assert!("12-x".parse::<StreamId>().is_err());
        assert!("".parse::<StreamId>().is_err());
    }
}
