//! The in-memory store: Redis semantics inside the process, so `meridian up`
//! and role tests need nothing but cargo.
//!
//! One keyspace like a Redis database: each key holds a stream, a hash or a
//! string (dedup marks, locks), and may carry an expiry deadline. An expired
//! key is absent everywhere; it is removed when next touched, and all expired
//! keys are dropped when keys are counted or listed. Deadlines are
//! [`tokio::time::Instant`]s, so tests with paused time can expire keys.
//!
//! Bounds: every stream keeps exactly its `maxlen` newest entries (the
//! strictest reading of `MAXLEN ~`), so memory is bounded by the sum of the
//! streams' `maxlen` times the entry size. The number of streams is bounded
//! by the topics the producers declare (one stream per topic); entry sizes
//! are bounded by the protocol's frame limits upstream. Hashes, marks and
//! locks are few and expire. Nothing survives a restart of the process.

use crate::check::{check_batch, check_once_batches, expire_millis, ttl_millis};
use crate::contract::{Append, Entry, OnceBatch, Store, StoreError, StreamEntries, StreamReader};
use async_trait::async_trait;
use meridian_proto::StreamId;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Keys kept in this process, shared by every clone.
///
/// Cloning is cheap and shares state, like cloning a Redis connection: the
/// ingest and frontend roles of one process see the same keys.
#[derive(Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Never held across an `.await`: every critical section is a few
    /// in-memory operations, so a blocking mutex is cheaper than an async one.
    keys: Mutex<Keyspace>,
    /// Woken after every append, so blocked readers look again.
    appended: Notify,
}

/// Every key of the store, of any type.
#[derive(Default)]
struct Keyspace {
    items: HashMap<String, Item>,
}

/// What one key holds, and until when.
struct Item {
    value: Value,
    /// `None`: kept until deleted.
    expires: Option<Instant>,
}

enum Value {
    Stream(Stream),
    /// Fields in the order they were first set, as Redis keeps small hashes.
    Hash(Vec<(String, String)>),
    /// A string: a dedup mark or a lock's holder.
    Text(String),
}

impl Value {
    /// The type's name as Redis's `TYPE` gives it, for error messages.
    fn kind(&self) -> &'static str {
        match self {
            Value::Stream(_) => "stream",
            Value::Hash(_) => "hash",
            Value::Text(_) => "string",
        }
    }
}

#[derive(Default)]
struct Stream {
    /// Oldest first; ids strictly increasing, so reads binary-search.
    entries: VecDeque<Entry>,
    /// The newest id ever assigned, kept apart from `entries` so ids keep
    /// increasing even when trimming empties the stream (as Redis does).
    last_id: StreamId,
}

impl Stream {
    /// Appends an entry and trims to exactly `maxlen`; returns its id.
    fn push(&mut self, fields: &[(String, String)], maxlen: usize, now_ms: u64) -> StreamId {
        let id = self.last_id.next(now_ms);
        self.last_id = id;
        self.entries.push_back(Entry {
            id,
            fields: fields.to_vec(),
        });
        let excess = self.entries.len().saturating_sub(maxlen);
        self.entries.drain(..excess);
        id
    }
}

/// Refused like Redis's `WRONGTYPE`: a bug or a misconfiguration.
fn wrong_type(key: &str, found: &Value, wanted: &str) -> StoreError {
    StoreError::Refused(format!(
        "WRONGTYPE key {key:?} holds a {}, not a {wanted}",
        found.kind()
    ))
}

impl Keyspace {
    /// The live item at `key`; an expired one is removed first.
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Item> {
        if self.items.get(key)?.expires.is_some_and(|at| at <= now) {
            self.items.remove(key);
            return None;
        }
        self.items.get_mut(key)
    }

    /// Drops every expired key.
    fn purge(&mut self, now: Instant) {
        self.items
            .retain(|_, item| item.expires.is_none_or(|at| at > now));
    }

    /// The stream at `key`, `None` if there is none; refused if the key holds
    /// another type.
    fn stream(&mut self, key: &str, now: Instant) -> Result<Option<&mut Stream>, StoreError> {
        match self.live(key, now) {
            None => Ok(None),
            Some(Item {
                value: Value::Stream(stream),
                ..
            }) => Ok(Some(stream)),
            Some(other) => Err(wrong_type(key, &other.value, "stream")),
        }
    }

    /// The stream at `key`, created empty if there is none.
    fn stream_or_new(&mut self, key: &str, now: Instant) -> Result<&mut Stream, StoreError> {
        if self.live(key, now).is_none() {
            self.items.insert(
                key.to_string(),
                Item {
                    value: Value::Stream(Stream::default()),
                    expires: None,
                },
            );
        }
        match self.stream(key, now)? {
            Some(stream) => Ok(stream),
            None => Err(StoreError::Protocol(format!("stream {key:?} vanished"))),
        }
    }

    /// Refuses if `key` holds something other than a stream.
    fn check_stream(&mut self, key: &str, now: Instant) -> Result<(), StoreError> {
        self.stream(key, now).map(|_| ())
    }

    /// The string at `key`, `None` if there is none; refused if the key holds
    /// another type (as Redis's `GET` does).
    fn text(&mut self, key: &str, now: Instant) -> Result<Option<&str>, StoreError> {
        match self.live(key, now) {
            None => Ok(None),
            Some(Item {
                value: Value::Text(text),
                ..
            }) => Ok(Some(text.as_str())),
            Some(other) => Err(wrong_type(key, &other.value, "string")),
        }
    }

    /// Replaces whatever `key` held with a string expiring at `expires`.
    fn set_text(&mut self, key: &str, text: String, expires: Option<Instant>) {
        self.items.insert(
            key.to_string(),
            Item {
                value: Value::Text(text),
                expires,
            },
        );
    }

    /// One [`OnceBatch`], as the Redis script does it: checks first (the mark
    /// is a sequence number, every stream key holds a stream or nothing), then
    /// appends the entries above the mark, moving it along, then stores it.
    fn append_once(&mut self, batch: &OnceBatch, now: Instant, now_ms: u64) -> Result<usize, StoreError> {
        let mut mark = self.text(&batch.dedup_key, now)?.unwrap_or("0").to_string();
        if !is_sequence(&mark) {
            return Err(StoreError::Refused(format!(
                "dedup mark {:?} holds {mark:?}, not a sequence number",
                batch.dedup_key
            )));
        }
        for (_, append) in &batch.entries {
            self.check_stream(&append.key, now)?;
        }
        let mut written = 0;
        for (seq, append) in &batch.entries {
            let seq = seq.to_string();
            if seq_above(&seq, &mark) {
                self.stream_or_new(&append.key, now)?
                    .push(&append.fields, append.maxlen, now_ms);
                mark = seq;
                written += 1;
            }
        }
        let ttl = ttl_millis("mark_ttl", batch.mark_ttl)?;
        self.set_text(&batch.dedup_key, mark, Some(now + Duration::from_millis(ttl)));
        Ok(written)
    }
}

/// A canonical decimal sequence number, as the Redis script accepts a mark:
/// digits without a leading zero, at most 20 (`u64::MAX` has 20).
fn is_sequence(s: &str) -> bool {
    (s == "0" || s.starts_with(|c: char| matches!(c, '1'..='9')))
        && s.len() <= 20
        && s.bytes().all(|b| b.is_ascii_digit())
}

/// `a > b` for canonical decimal strings, compared as the Redis script
/// compares them (longer is larger, then by bytes), so both stores agree
/// on every mark the script accepts.
fn seq_above(a: &str, b: &str) -> bool {
    (a.len(), a) > (b.len(), b)
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn keys(&self) -> MutexGuard<'_, Keyspace> {
        // A panic while holding the lock cannot leave a key half-updated
        // in a way that breaks its invariants (ids are assigned before the
        // push), so a poisoned lock is still usable.
        self.shared
            .keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("keys", &self.keys().items.len())
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

#[async_trait]
impl Store for MemoryStore {
    async fn append(&self, batch: &[Append]) -> Result<Vec<StreamId>, StoreError> {
        check_batch(batch)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (now, now_ms) = (Instant::now(), now_ms());
        let ids = {
            let mut keys = self.keys();
            // Types first, so a key of another type stores nothing.
            for append in batch {
                keys.check_stream(&append.key, now)?;
            }
            batch
                .iter()
                .map(|append| {
                    Ok(keys
                        .stream_or_new(&append.key, now)?
                        .push(&append.fields, append.maxlen, now_ms))
                })
                .collect::<Result<Vec<_>, StoreError>>()?
        };
        self.shared.appended.notify_waiters();
        Ok(ids)
    }

    async fn last(&self, key: &str, count: usize) -> Result<Vec<Entry>, StoreError> {
        let mut keys = self.keys();
        let Some(stream) = keys.stream(key, Instant::now())? else {
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
        let mut keys = self.keys();
        let Some(stream) = keys.stream(key, Instant::now())? else {
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
        Ok(self
            .keys()
            .stream(key, Instant::now())?
            .map_or(0, |s| s.entries.len()))
    }

    async fn reader(&self) -> Result<Box<dyn StreamReader>, StoreError> {
        Ok(Box::new(MemoryReader { store: self.clone() }))
    }

    /// Like the pipeline of scripts on Redis, every batch is tried even after
    /// one fails (a key of another type, a mark that is not a number); the
    /// first error is returned, and a retry skips what was written.
    async fn append_once(&self, batches: &[OnceBatch]) -> Result<Vec<usize>, StoreError> {
        check_once_batches(batches)?;
        let (now, now_ms) = (Instant::now(), now_ms());
        let results: Vec<Result<usize, StoreError>> = {
            let mut keys = self.keys();
            batches
                .iter()
                .map(|batch| {
                    if batch.entries.is_empty() {
                        Ok(0)
                    } else {
                        keys.append_once(batch, now, now_ms)
                    }
                })
                .collect()
        };
        if results.iter().any(|r| matches!(r, Ok(n) if *n > 0)) {
            self.shared.appended.notify_waiters();
        }
        results.into_iter().collect()
    }

    async fn hash_set(
        &self,
        key: &str,
        fields: &[(String, String)],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let ttl = expire_millis(ttl)?;
        let now = Instant::now();
        let mut keys = self.keys();
        if !fields.is_empty() {
            let item = match keys.live(key, now) {
                Some(item) => item,
                None => keys.items.entry(key.to_string()).or_insert(Item {
                    value: Value::Hash(Vec::new()),
                    expires: None,
                }),
            };
            let Value::Hash(hash) = &mut item.value else {
                return Err(wrong_type(key, &item.value, "hash"));
            };
            for (field, value) in fields {
                match hash.iter_mut().find(|(f, _)| f == field) {
                    Some((_, old)) => old.clone_from(value),
                    None => hash.push((field.clone(), value.clone())),
                }
            }
        }
        // With no fields only the TTL changes, of whatever the key holds.
        if let Some(item) = keys.live(key, now) {
            item.expires = ttl.map(|ms| now + Duration::from_millis(ms));
        }
        Ok(())
    }

    async fn hash_get(&self, key: &str) -> Result<Vec<(String, String)>, StoreError> {
        match self.keys().live(key, Instant::now()) {
            None => Ok(Vec::new()),
            Some(Item {
                value: Value::Hash(hash),
                ..
            }) => Ok(hash.clone()),
            Some(other) => Err(wrong_type(key, &other.value, "hash")),
        }
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let now = Instant::now();
        Ok(self
            .keys()
            .live(key, now)
            .and_then(|item| item.expires)
            .map(|at| at.saturating_duration_since(now)))
    }

    async fn expire(&self, keys: &[String], ttl: Option<Duration>) -> Result<(), StoreError> {
        let ttl = expire_millis(ttl)?;
        let now = Instant::now();
        let mut space = self.keys();
        for key in keys {
            if let Some(item) = space.live(key, now) {
                item.expires = ttl.map(|ms| now + Duration::from_millis(ms));
            }
        }
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.keys().live(key, Instant::now()).is_some())
    }

    async fn trim_before(&self, key: &str, min_id: StreamId) -> Result<usize, StoreError> {
        let mut keys = self.keys();
        Ok(keys.stream(key, Instant::now())?.map_or(0, |stream| {
            let n = stream.entries.iter().take_while(|e| e.id < min_id).count();
            stream.entries.drain(..n);
            n
        }))
    }

    async fn delete(&self, keys: &[String]) -> Result<usize, StoreError> {
        let now = Instant::now();
        let mut space = self.keys();
        let mut deleted = 0;
        for key in keys {
            if space.live(key, now).is_some() {
                space.items.remove(key);
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Sorted, unlike SCAN's order, to make listings easy to read.
    async fn keys_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut keys = self.keys();
        keys.purge(Instant::now());
        let mut found: Vec<String> = keys
            .items
            .keys()
            .filter(|key| key.starts_with(prefix))
            .cloned()
            .collect();
        found.sort_unstable();
        found.truncate(limit);
        Ok(found)
    }

    async fn key_count(&self) -> Result<usize, StoreError> {
        let mut keys = self.keys();
        keys.purge(Instant::now());
        Ok(keys.items.len())
    }

    async fn lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let ttl = Duration::from_millis(ttl_millis("lock ttl", ttl)?);
        let now = Instant::now();
        let mut keys = self.keys();
        match keys.text(name, now)? {
            Some(current) if current != holder => Ok(false),
            // Free, expired, or `holder`'s own: take or renew.
            _ => {
                keys.set_text(name, holder.to_string(), Some(now + ttl));
                Ok(true)
            }
        }
    }

    async fn unlock(&self, name: &str, holder: &str) -> Result<bool, StoreError> {
        let mut keys = self.keys();
        if keys.text(name, Instant::now())? == Some(holder) {
            keys.items.remove(name);
            return Ok(true);
        }
        Ok(false)
    }
}

/// A reader of a [`MemoryStore`]: it holds nothing but a handle, so readers
/// are as cheap as the Redis ones are not.
pub struct MemoryReader {
    store: MemoryStore,
}

impl MemoryReader {
    /// Entries after each cursor that are there now; streams with none left
    /// out; refused if a cursor's key holds another type (as XREAD is).
    fn collect(
        &self,
        cursors: &[(String, StreamId)],
        count: usize,
    ) -> Result<Vec<StreamEntries>, StoreError> {
        let now = Instant::now();
        let mut keys = self.store.keys();
        let mut found = Vec::new();
        for (key, after) in cursors {
            let Some(stream) = keys.stream(key, now)? else {
                continue;
            };
            let start = first_after(&stream.entries, *after);
            let entries: Vec<Entry> = stream.entries.range(start..).take(count).cloned().collect();
            if !entries.is_empty() {
                found.push(StreamEntries {
                    key: key.clone(),
                    entries,
                });
            }
        }
        Ok(found)
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
        let deadline = Instant::now()
            .checked_add(block)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 86_400));
        loop {
            // Register for the wake-up *before* looking, so an append that
            // lands between the look and the wait is not missed.
            let notified = self.store.shared.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let found = self.collect(cursors, count)?;
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

    #[test]
    fn marks_compare_like_the_redis_script() {
        assert!(seq_above("10", "9"));
        assert!(seq_above("18446744073709551615", "18446744073709551614"));
        assert!(!seq_above("5", "5"));
        assert!(!seq_above("0", "1"));
        for good in ["0", "7", "18446744073709551615"] {
            assert!(is_sequence(good), "{good}");
        }
        for bad in ["", "01", "-1", "+1", "1.0", "x", "123456789012345678901"] {
            assert!(!is_sequence(bad), "{bad}");
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
