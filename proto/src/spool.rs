//! The producer's event spool: every event waits here until the ingest
//! manager acknowledges that it is stored, across reconnects.
//!
//! A pure state machine (no I/O, no clock), so it is tested exhaustively
//! without sockets. The producer pushes events as the CSC publishes them,
//! takes unsent ones to write on the wire, acknowledges what the ingest
//! stored, and rewinds when a connection is lost: what was sent but not
//! acknowledged is sent again, in order, on the next connection (the ingest
//! writes each sequence number once).
//!
//! Bound: at most `max_events` events and `max_bytes` bytes (estimated).
//! When full, [`OnFull`] says who pays.

use crate::bound::OnFull;
use crate::frame::Sample;
use crate::value::Value;
use std::collections::VecDeque;

/// What happened to a pushed event.
#[derive(Debug, Clone, PartialEq)]
pub enum Pushed {
    Spooled,
    /// Spooled, and the oldest event was dropped for it.
    DroppedOldest,
    /// Not spooled: the spool is full and drops new events.
    DroppedNewest,
    /// Not spooled, handed back: the spool is full and blocks.
    Full(Box<Sample>),
}

#[derive(Debug)]
pub struct Spool {
    entries: VecDeque<(Sample, usize)>,
    /// How many entries from the front were sent on the current connection.
    sent: usize,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    on_full: OnFull,
    dropped: u64,
}

/// Approximate memory of a sample: its values and names, plus a fixed overhead.
pub fn estimated_size(sample: &Sample) -> usize {
    let values: usize = sample
        .fields
        .iter()
        .map(|(name, value)| {
            name.len()
                + 32
                + match value {
                    Value::Str(s) => s.len(),
                    Value::Bools(v) => v.len(),
                    Value::Ints(v) => v.len() * 8,
                    Value::Floats(v) => v.len() * 8,
                    _ => 8,
                }
        })
        .sum();
    64 + sample.topic.len() + values
}

impl Spool {
    /// A spool of at most `max_events` events and `max_bytes` bytes (each at least 1).
    pub fn new(max_events: usize, max_bytes: usize, on_full: OnFull) -> Spool {
        Spool {
            entries: VecDeque::new(),
            sent: 0,
            bytes: 0,
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
            on_full,
            dropped: 0,
        }
    }

    fn fits(&self, size: usize) -> bool {
        self.entries.len() < self.max_events && self.bytes + size <= self.max_bytes
    }

    /// Adds an event (its `seq` already assigned, increasing).
    pub fn push(&mut self, sample: Sample) -> Pushed {
        let size = estimated_size(&sample);
        if self.fits(size) {
            self.entries.push_back((sample, size));
            self.bytes += size;
            return Pushed::Spooled;
        }
        match self.on_full {
            OnFull::Block => Pushed::Full(Box::new(sample)),
            OnFull::DropNewest => {
                self.dropped += 1;
                Pushed::DroppedNewest
            }
            OnFull::DropOldest => {
                while !self.entries.is_empty() && !self.fits(size) {
                    if let Some((_, s)) = self.entries.pop_front() {
                        self.bytes -= s;
                        self.sent = self.sent.saturating_sub(1);
                        self.dropped += 1;
                    }
                }
                if !self.fits(size) {
                    // Larger than the whole spool on its own.
                    self.dropped += 1;
                    return Pushed::DroppedNewest;
                }
                self.entries.push_back((sample, size));
                self.bytes += size;
                Pushed::DroppedOldest
            }
        }
    }

    /// Up to `max` events not yet sent on this connection, oldest first;
    /// they count as sent from now on.
    pub fn take_unsent(&mut self, max: usize) -> Vec<Sample> {
        let end = (self.sent + max).min(self.entries.len());
        let batch = self
            .entries
            .range(self.sent..end)
            .map(|(s, _)| s.clone())
            .collect();
        self.sent = end;
        batch
    }

    /// Gives back the last `n` events taken by [`Spool::take_unsent`]: they
    /// count as unsent again (a frame was split).
    pub fn unsend(&mut self, n: usize) {
        self.sent = self.sent.saturating_sub(n);
    }

    /// The ingest stored every event with `seq <= up_to_seq`: forget them.
    /// Returns how many were released.
    pub fn ack(&mut self, up_to_seq: u64) -> usize {
        let mut released = 0;
        while let Some((front, size)) = self.entries.front() {
            if front.seq > up_to_seq {
                break;
            }
            self.bytes -= *size;
            self.entries.pop_front();
            self.sent = self.sent.saturating_sub(1);
            released += 1;
        }
        released
    }

    /// The connection was lost: everything unacknowledged is sent again.
    pub fn rewind(&mut self) {
        self.sent = 0;
    }

    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.max_events || self.bytes >= self.max_bytes
    }

    /// Events spooled (sent or not) and not yet acknowledged.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The sequence number of the newest spooled event: a replay after a
    /// reconnect is over once it is acknowledged.
    pub fn last_seq(&self) -> Option<u64> {
        self.entries.back().map(|(sample, _)| sample.seq)
    }

    /// Events sent on this connection and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.sent
    }

    pub fn has_unsent(&self) -> bool {
        self.sent < self.entries.len()
    }

    /// Estimated bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Events dropped because the spool was full, since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::Category;

    fn event(seq: u64) -> Sample {
        Sample {
            topic: "heartbeat".into(),
            category: Category::Event,
            salindex: None,
            seq,
            source_ts: seq as f64,
            fields: vec![("heartbeat".into(), Value::Bool(true))],
        }
    }

    #[test]
    fn last_seq_is_the_newest_event_until_it_is_acknowledged() {
        let mut spool = Spool::new(10, 1 << 20, OnFull::Block);
        assert_eq!(spool.last_seq(), None);
        spool.push(event(1));
        spool.push(event(2));
        assert_eq!(spool.last_seq(), Some(2));
        spool.ack(1);
        assert_eq!(spool.last_seq(), Some(2));
        spool.ack(2);
        assert_eq!(spool.last_seq(), None);
    }

    fn seqs(v: &[Sample]) -> Vec<u64> {
        v.iter().map(|s| s.seq).collect()
    }

    #[test]
    fn events_are_sent_once_per_connection_and_again_after_a_loss_until_acknowledged() {
        let mut spool = Spool::new(100, usize::MAX, OnFull::DropNewest);
        for seq in 1..=10 {
            assert_eq!(spool.push(event(seq)), Pushed::Spooled);
        }
        assert_eq!(seqs(&spool.take_unsent(4)), [1, 2, 3, 4]);
        assert_eq!(seqs(&spool.take_unsent(4)), [5, 6, 7, 8]);
        assert_eq!(spool.ack(3), 3);
        assert_eq!(spool.in_flight(), 5);
        // The connection drops: 4..8 were sent but not acknowledged.
        spool.rewind();
        assert_eq!(seqs(&spool.take_unsent(100)), [4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(spool.ack(10), 7);
        assert!(spool.is_empty());
        assert_eq!(spool.bytes(), 0);
        assert_eq!(spool.take_unsent(10), vec![]);
    }

    #[test]
    fn an_ack_of_something_older_releases_nothing_more() {
        let mut spool = Spool::new(10, usize::MAX, OnFull::DropNewest);
        spool.push(event(5));
        spool.take_unsent(1);
        assert_eq!(spool.ack(4), 0);
        assert_eq!(spool.ack(5), 1);
    }

    #[test]
    fn a_full_spool_applies_its_policy_and_counts_what_it_dropped() {
        let mut newest = Spool::new(3, usize::MAX, OnFull::DropNewest);
        let mut oldest = Spool::new(3, usize::MAX, OnFull::DropOldest);
        let mut block = Spool::new(3, usize::MAX, OnFull::Block);
        for seq in 1..=3 {
            newest.push(event(seq));
            oldest.push(event(seq));
            block.push(event(seq));
        }
        assert_eq!(newest.push(event(4)), Pushed::DroppedNewest);
        assert_eq!(seqs(&newest.take_unsent(10)), [1, 2, 3]);
        assert_eq!(newest.dropped(), 1);

        assert_eq!(oldest.push(event(4)), Pushed::DroppedOldest);
        assert_eq!(seqs(&oldest.take_unsent(10)), [2, 3, 4]);
        assert_eq!(oldest.dropped(), 1);

        assert!(matches!(block.push(event(4)), Pushed::Full(s) if s.seq == 4));
        assert_eq!(block.dropped(), 0);
        assert!(block.is_full());
    }

    #[test]
    fn the_byte_bound_holds_too() {
        let size = estimated_size(&event(1));
        let mut spool = Spool::new(1000, size * 2, OnFull::DropNewest);
        spool.push(event(1));
        spool.push(event(2));
        assert_eq!(spool.push(event(3)), Pushed::DroppedNewest);
        assert!(spool.bytes() <= size * 2);
    }

    #[test]
    fn dropping_oldest_while_in_flight_keeps_the_send_position_right() {
        let mut spool = Spool::new(2, usize::MAX, OnFull::DropOldest);
        spool.push(event(1));
        spool.push(event(2));
        assert_eq!(seqs(&spool.take_unsent(1)), [1]);
        spool.push(event(3)); // drops 1, which was in flight
        assert_eq!(seqs(&spool.take_unsent(10)), [2, 3]);
    }
}
