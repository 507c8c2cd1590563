//! The store: append-only streams of samples, one per topic.
//!
//! Two implementations share the [`Store`] trait and one conformance suite
//! (`tests/tests/store_conformance.rs`): [`redis::RedisStore`] (Redis
//! streams: XADD with `MAXLEN ~`, XREAD, XREVRANGE) for production, and
//! [`memory::MemoryStore`] (the same semantics in-process) so `meridian up`
//! needs nothing but cargo.
//!
//! Semantics both keep:
//! - ids are `<ms>-<seq>` ([`StreamId`]), strictly increasing per stream;
//! - `append` of a batch is one round trip and returns the ids in order;
//! - retention is approximate like `MAXLEN ~`: at least `maxlen` newest
//!   entries are kept, and a stream never holds more than `maxlen` plus one
//!   trimming unit ([`TRIM_SLACK`]);
//! - reads return entries strictly after the given id, oldest first.

pub mod memory;
pub mod redis;

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

/// Opens the store `config` names: Redis (checked with a first command, so a
/// wrong URL fails at start with the URL in the message) or a new in-memory store.
pub async fn open(config: &meridian_config::StoreConfig) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    Ok(match config.backend {
        meridian_config::StoreBackend::Memory => std::sync::Arc::new(memory::MemoryStore::new()),
        meridian_config::StoreBackend::Redis => {
            let store = redis::RedisStore::connect(&config.redis_url).await?;
            store.len("meridian:probe").await.map_err(|e| match e {
                StoreError::Unavailable(reason) => {
                    StoreError::Unavailable(format!("store.redis_url = {}: {reason}", config.redis_url))
                }
                other => other,
            })?;
            std::sync::Arc::new(store)
        }
    })
}
