//! The store: append-only streams of samples, one per topic, plus the few
//! hashes, dedup marks and locks the roles share, behind one [`Store`] trait.
//!
//! Three backends keep the same semantics (see [`Store`]) and run one
//! conformance suite (`tests/conformance.rs`): [`redis::RedisStore`] for
//! production, [`cluster::ClusterStore`] when one Redis is not enough, and
//! [`memory::MemoryStore`] so `meridian up` needs nothing but cargo.
//! It stores the keys and fields it is given; what they mean (topics, CSCs,
//! the keyspace) is `meridian_proto`'s, and who writes them is the roles'.
//!
//! Layout (dependencies point down the list, never back; no backend imports
//! another):
//! - `open`: [`open()`] opens the backend a `StoreConfig` names; the one
//!   module that knows every backend.
//! - [`memory`], [`redis`], [`cluster`]: the backends. `redis` and `cluster`
//!   differ only in connections and routing (one server, or one pipeline
//!   per hash slot); what they send and parse is shared below.
//! - `script`: the Lua scripts for what must be atomic (exactly-once append,
//!   hash with TTL, locks), the calls that fill in their `KEYS`/`ARGV`, the
//!   commands that carry them and the reading of their replies.
//! - `command`: builders of the Redis commands both Redis backends send, and
//!   the time bounds on them.
//! - `reply`: Redis replies read into the store's types (RESP2 and RESP3),
//!   and redis-rs errors sorted into [`StoreError`]s.
//! - `check`: argument checks (empty entries, TTLs) every backend makes
//!   first, so all refuse the same calls.
//! - `contract`: the [`Store`] and [`StreamReader`] traits, their types and
//!   [`StoreError`]; re-exported here.

mod check;
pub mod cluster;
mod command;
mod contract;
pub mod memory;
mod open;
pub mod redis;
mod reply;
mod script;

pub use check::MAX_TTL;
pub use contract::{Append, Entry, OnceBatch, Store, StoreError, StreamEntries, StreamReader, TRIM_SLACK};
pub use open::open;
