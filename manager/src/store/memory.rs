//! The in-memory store: Redis stream semantics inside the process, so
//! `meridian up` and role tests need nothing but cargo.
//!
//! Bounds: every stream keeps exactly its `maxlen` newest entries (the
//! strictest reading of `MAXLEN ~`), so memory is bounded by the sum of the
//! streams' `maxlen` times the entry size. The number of streams is bounded
//! by the topics the producers declare (one stream per topic); entry sizes
//! are bounded by the protocol's frame limits upstream. Nothing survives a
//! restart of the process.

use super::{Append, Entry, Store, StoreError, StreamEntries, StreamReader};
use async_trait::async_trait;
use meridian_proto::StreamId;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Streams kept in this process, shared by every clone.
///
/// Cloning is cheap and shares state, like cloning a Redis connection: the
/// ingest and frontend roles of one process see the same streams.
#[derive(Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Never held across an `.await`: every critical section is a few
    /// in-memory operations, so a blocking mutex is cheaper than an async one.
    streams: Mutex<HashMap<String, Stream>>,
    /// Woken after every append, so blocked readers look again.
    appended: Notify,
}

#[derive(Default)]
struct Stream {
    /// Oldest first; ids strictly increasing, so reads binary-search.
    entries: VecDeque<Entry>,
    /// The newest id ever assigned, kept apart from `entries` so ids keep
    /// increasing even when trimming empties the stream (as Redis does).
    last_id: StreamId,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn streams(&self) -> MutexGuard<'_, HashMap<String, Stream>> {
        // A panic while holding the lock cannot leave a stream half-updated
        // in a way that breaks its invariants (ids are assigned before the
        // push), so a poisoned lock is still usable.
        self.shared
            .streams
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("streams", &self.streams().len())
            .finish()
    }
}

/// Milliseconds since the Unix epoch; a clock before 1970 reads as 0, and
/// [`StreamId::next`] keeps ids increasing whatever the clock does.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Index of the first entry with an id greater than `after`.
fn first_after(entries: &VecDeque<Entry>, after: StreamId) -> usize {
    entries.partition_point(|e| e.id <= after)
}

/// Refuses entries Redis would refuse (XADD needs at least one field), before
/// anything is stored, so both stores accept the same batches.
pub(super) fn check_batch(batch: &[Append]) -> Result<(), StoreError> {
    match batch.iter().find(|a| a.fields.is_empty()) {
        Some(a) => Err(StoreError::Refused(format!(
            "an entry for stream {:?} has no fields; a stream entry needs at least one",
            a.key
        ))),
        None => Ok(()),
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn append(&self, batch: &[Append]) -> Result<Vec<StreamId>, StoreError> {
        check_batch(batch)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let ids = {
            let mut streams = self.streams();
            batch
                .iter()
                .map(|append| {
                    let stream = streams.entry(append.key.clone()).or_default();
                    let id = stream.last_id.next(now);
                    stream.last_id = id;
                    stream.entries.push_back(Entry {
                        id,
                        fields: append.fields.clone(),
                    });
                    let excess = stream.entries.len().saturating_sub(append.maxlen);
                    stream.entries.drain(..excess);
                    id
                })
                .collect()
        };
        self.shared.appended.notify_waiters();
        Ok(ids)
    }

    async fn last(&self, key: &str, count: usize) -> Result<Vec<Entry>, StoreError> {
        let streams = self.streams();
        let Some(stream) = streams.get(key) else {
            return Ok(Vec::new());
        };
        let skip = stream.entries.len().saturating_sub(count);
        Ok(stream.entries.range(skip..).cloned().collect())
    }

    async fn range(
        &self,
        key: &str,
        after: StreamId,
        until: Option<StreamId>,
        count: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let streams = self.streams();
        let Some(stream) = streams.get(key) else {
            return Ok(Vec::new());
        };
        let start = first_after(&stream.entries, after);
        Ok(stream
            .entries
            .range(start..)
            .take_while(|e| until.is_none_or(|until| e.id <= until))
            .take(count)
            .cloned()
            .collect())
    }

    async fn len(&self, key: &str) -> Result<usize, StoreError> {
        Ok(self.streams().get(key).map_or(0, |s| s.entries.len()))
    }

    async fn reader(&self) -> Result<Box<dyn StreamReader>, StoreError> {
        Ok(Box::new(MemoryReader { store: self.clone() }))
    }
}

/// A reader of a [`MemoryStore`]: it holds nothing but a handle, so readers
/// are as cheap as the Redis ones are not.
pub struct MemoryReader {
    store: MemoryStore,
}

impl MemoryReader {
    /// Entries after each cursor that are there now; streams with none left out.
    fn collect(&self, cursors: &[(String, StreamId)], count: usize) -> Vec<StreamEntries> {
        let streams = self.store.streams();
        cursors
            .iter()
            .filter_map(|(key, after)| {
                let stream = streams.get(key)?;
                let start = first_after(&stream.entries, *after);
                let entries: Vec<Entry> = stream.entries.range(start..).take(count).cloned().collect();
                (!entries.is_empty()).then(|| StreamEntries {
                    key: key.clone(),
                    entries,
                })
            })
            .collect()
    }
}

#[async_trait]
impl StreamReader for MemoryReader {
    /// `count` 0 is read as 1, as a read that may return nothing but waits
    /// for something has no use (and Redis would read it as "no limit").
    async fn read(
        &mut self,
        cursors: &[(String, StreamId)],
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamEntries>, StoreError> {
        let count = count.max(1);
        // A block too long to represent waits a year, forever in effect.
        let deadline = tokio::time::Instant::now()
            .checked_add(block)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(365 * 86_400));
        loop {
            // Register for the wake-up *before* looking, so an append that
            // lands between the look and the wait is not missed.
            let notified = self.store.shared.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let found = self.collect(cursors, count);
            if !found.is_empty() {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(key: &str, maxlen: usize, value: &str) -> Append {
        Append {
            key: key.to_string(),
            maxlen,
            fields: vec![("v".to_string(), value.to_string())],
        }
    }

    #[tokio::test]
    async fn trimming_keeps_exactly_maxlen_and_ids_keep_increasing() {
        let store = MemoryStore::new();
        let mut previous = StreamId::ZERO;
        for i in 0..10 {
            let ids = store.append(&[append("k", 3, &i.to_string())]).await.unwrap();
            assert!(ids[0] > previous);
            previous = ids[0];
        }
        let kept = store.last("k", 10).await.unwrap();
        let values: Vec<_> = kept.iter().filter_map(|e| e.field("v")).collect();
        assert_eq!(values, ["7", "8", "9"]);

        // A stream trimmed to nothing still assigns larger ids.
        let ids = store.append(&[append("k", 0, "x")]).await.unwrap();
        assert!(ids[0] > previous);
        assert_eq!(store.len("k").await.unwrap(), 0);
        let ids2 = store.append(&[append("k", 1, "y")]).await.unwrap();
        assert!(ids2[0] > ids[0]);
    }
}
