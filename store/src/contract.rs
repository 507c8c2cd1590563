//! What every store promises: the [`Store`] and [`StreamReader`] traits,
//! the types they take and give, and [`StoreError`]. The conformance suite
//! (`store/tests/conformance.rs`) holds every backend to it.
//!
//! Semantics every store keeps:
//! - ids are `<ms>-<seq>` ([`StreamId`]), strictly increasing per stream;
//! - `append` of a batch is one round trip and returns the ids in order;
//! - retention is approximate like `MAXLEN ~`: at least `maxlen` newest
//!   entries are kept, and a stream never holds more than `maxlen` plus one
//!   trimming unit ([`TRIM_SLACK`]);
//! - reads return entries strictly after the given id, oldest first;
//! - every key holds one type (a stream, a hash, or a string: dedup marks and
//!   locks); using it as another type is `Refused`, like Redis's `WRONGTYPE`,
//!   and the calls that check types (`append_once`, `hash_set`) write nothing then;
//! - a key may expire; an expired key is absent to every call (Redis's
//!   `DBSIZE`, behind [`Store::key_count`], may still count it for up to about a
//!   second, until Redis reclaims it);
//! - any key may be given a time to live ([`Store::expire`]; hashes also
//!   with [`Store::hash_set`]); appending to a stream keeps its TTL, as
//!   `XADD` does, so a stream that must expire some time after its last
//!   write gets its TTL again after each write;
//! - times to live are set in whole milliseconds, rounded up, at most
//!   `MAX_TTL` (ten years); a zero TTL is `Refused` (it would expire the key as
//!   it is written).
//!
//! One limit only a Redis Cluster has: the keys of one [`OnceBatch`] (its
//! mark and its streams) must hash to one slot, i.e. share a hash tag, as
//! every key of one CSC instance does; `ClusterStore` refuses others.

use async_trait::async_trait;
use meridian_proto::StreamId;
use std::time::Duration;

/// How far above `maxlen` an approximately trimmed stream may grow: Redis
/// trims whole radix-tree nodes of 100 entries (`stream-node-max-entries`).
pub const TRIM_SLACK: usize = 100;

/// One entry to append.
#[derive(Debug, Clone, PartialEq)]
pub struct Append {
    /// The stream's key, from `TopicId::stream_key`.
    pub key: String,
    /// Retention: keep about this many newest entries (`MAXLEN ~`).
    pub maxlen: usize,
    /// Field/value pairs, in order.
    pub fields: Vec<(String, String)>,
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: StreamId,
    pub fields: Vec<(String, String)>,
}

impl Entry {
    /// The value of `name`, if the entry has that field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Entries read from one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntries {
    pub key: String,
    pub entries: Vec<Entry>,
}

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or the connection broke: retry later;
    /// nothing was acknowledged for the failed call.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with an error (e.g. a key of another type): a bug
    /// or a misconfiguration, retrying will not help.
    #[error("store refused the request: {0}")]
    Refused(String),
    /// A reply could not be understood (e.g. an id that is not `<ms>-<seq>`).
    #[error("unexpected reply from the store: {0}")]
    Protocol(String),
}

/// Append-only streams, shared by every task of a role.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Appends every entry in one round trip (a pipeline on Redis), in order,
    /// trimming each stream to about its `maxlen`. Returns the new ids in the
    /// order of `batch`. All or nothing is not promised: on error, retry the
    /// whole batch (consumers deduplicate by producer sequence).
    async fn append(&self, batch: &[Append]) -> Result<Vec<StreamId>, StoreError>;

    /// The newest `count` entries of `key`, oldest first; empty if the stream
    /// does not exist (or `count` is 0).
    async fn last(&self, key: &str, count: usize) -> Result<Vec<Entry>, StoreError>;

    /// Entries of `key` with `after < id <= until`, oldest first, at most `count`
    /// (`None` for `until` means "to the newest").
    async fn range(
        &self,
        key: &str,
        after: StreamId,
        until: Option<StreamId>,
        count: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// Number of entries in `key` (0 if it does not exist).
    async fn len(&self, key: &str) -> Result<usize, StoreError>;

    /// A reader that may block waiting for new entries. On Redis each reader
    /// owns a connection, since `XREAD BLOCK` holds the connection it runs on.
    async fn reader(&self) -> Result<Box<dyn StreamReader>, StoreError>;

    /// Appends each batch atomically and exactly once: within a batch, an
    /// entry whose `seq` is not above the batch's high-water mark (the
    /// highest seq already written under `dedup_key`) is skipped, the rest
    /// are appended in order, and the mark moves to the highest seq written
    /// — all in one atomic step (a Lua script on Redis), so a replay after a
    /// lost acknowledgement, or through another ingest manager, is written
    /// once. The mark expires `mark_ttl` after its last update. Returns, per
    /// batch, how many entries were appended (the others were duplicates).
    async fn append_once(&self, batches: &[OnceBatch]) -> Result<Vec<usize>, StoreError>;

    /// Sets fields of the hash `key` (creating it), and its time to live:
    /// `Some(ttl)` expires it `ttl` from now, `None` keeps it until deleted
    /// (and removes a TTL set before).
    async fn hash_set(
        &self,
        key: &str,
        fields: &[(String, String)],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError>;

    /// Every field of the hash `key`; empty if it does not exist (or expired).
    async fn hash_get(&self, key: &str) -> Result<Vec<(String, String)>, StoreError>;

    /// Remaining time to live of `key`: `Ok(None)` if it exists with no TTL
    /// or does not exist (see [`Store::exists`]).
    async fn ttl(&self, key: &str) -> Result<Option<Duration>, StoreError>;

    /// Sets the time to live of every key of `keys` that exists, of any
    /// type (the one way to give a stream one): `Some(ttl)` expires it
    /// `ttl` from now, replacing an earlier TTL; `None` keeps it until
    /// deleted (removes a TTL). A missing key stays missing. One round trip
    /// (on a cluster, one pipeline per slot, all at once). Later appends
    /// keep the TTL; call this after a write to refresh it.
    ///
    /// The default sets each key's TTL with a field-less [`Store::hash_set`]
    /// (which changes only the TTL, of a key of any type), a round trip per
    /// key, for wrappers of a store; the stores do it in one.
    async fn expire(&self, keys: &[String], ttl: Option<Duration>) -> Result<(), StoreError> {
        for key in keys {
            self.hash_set(key, &[], ttl).await?;
        }
        Ok(())
    }

    /// Whether `key` exists (of any type, not expired).
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;

    /// Removes the entries of stream `key` with ids below `min_id`
    /// (`XTRIM key MINID min_id`, exact): retention by age. Returns how
    /// many were removed; 0 if the key does not exist.
    async fn trim_before(&self, key: &str, min_id: StreamId) -> Result<usize, StoreError>;

    /// Deletes keys; returns how many existed.
    async fn delete(&self, keys: &[String]) -> Result<usize, StoreError>;

    /// Keys starting with `prefix` (SCAN MATCH on Redis: never KEYS), at
    /// most `limit`. For sweepers and tests, not for hot paths.
    async fn keys_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError>;

    /// Number of keys in the store (DBSIZE), expired keys excluded.
    async fn key_count(&self) -> Result<usize, StoreError>;

    /// Takes or renews the lock `name` for `holder` for `ttl`: true if
    /// `holder` holds it afterwards (it was free, expired, or already
    /// `holder`'s), false if someone else holds it. Atomic (SET NX PX, or a
    /// script that renews only the holder's own lock).
    async fn lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Releases `name` if `holder` holds it (atomically); true if it did.
    async fn unlock(&self, name: &str, holder: &str) -> Result<bool, StoreError>;
}

/// Entries of one producer stream to append exactly once (see [`Store::append_once`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OnceBatch {
    /// Where the high-water mark of this producer stream lives; shares the
    /// entries' hash tag so a Redis Cluster keeps them on one shard.
    pub dedup_key: String,
    /// How long the mark outlives its last update.
    pub mark_ttl: Duration,
    /// Entries with their sequence numbers, in increasing `seq` order.
    pub entries: Vec<(u64, Append)>,
}

/// Reads new entries of many streams at once, waiting for them.
#[async_trait]
pub trait StreamReader: Send {
    /// For each `(key, after)` cursor, entries with id > `after`, at most
    /// `count` per stream, oldest first. If none is there yet, waits up to
    /// `block` for one; returns an empty list after that. Streams with no new
    /// entries are left out of the result.
    ///
    /// A zero `block` does not wait (unlike Redis's `BLOCK 0`, "forever"), and
    /// `count` 0 reads as 1 (unlike `XREAD COUNT 0`, "no limit"). On
    /// `Unavailable` the reader reconnects on its next call.
    async fn read(
        &mut self,
        cursors: &[(String, StreamId)],
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamEntries>, StoreError>;
}
