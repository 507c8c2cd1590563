//! Meridian's wire types and pure state machines.
//!
//! This crate owns every byte that crosses a process boundary: the frames a
//! producer and an ingest manager exchange over QUIC (bincode, length
//! delimited), the JSON a browser and a frontend manager exchange, and the
//! one place where topic names, store keys and stored entries are spelled.
//!
//! It must not do I/O: no tokio, quinn, redis or tungstenite here (CI checks
//! with `cargo tree`). Decoders take byte slices and return a typed error, so
//! hostile input is tested without sockets.
//!
//! Layout:
//! - [`topic`]: `Csc`, `SalIndex`, `Category`, `TopicId`.
//! - [`keys`]: every store key (streams, catalog, schemas, loads, locks, audit) and its hash tag.
//! - [`stored`]: the fields of what is stored under them (`StoredSample`, a topic stream's entry).
//! - [`value`]: field values of a sample and their JSON form.
//! - [`frame`]: producer ↔ ingest frames, the handshake, encode/decode.
//! - [`metrics`]: the Prometheus text every role's `/metrics` serves.
//! - [`throttle`]: per-address buckets of failed authentications (commander and frontend).
//! - [`bound`]: what a full bounded queue does (`OnFull`), for the spool and the ingest's queues.
//! - [`spool`]: the producer's bounded event spool (acknowledge, rewind, replay).
//! - [`browser`]: the JSON messages of the native WebSocket protocol.
//! - [`msgpack`]: the same data frames as MessagePack, for browsers that ask for binary frames.
//! - [`love`]: what browsers and producers of the replaced system (LOVE) send to its compatibility endpoint.
//! - [`stream_id`]: the store's entry ids (`<ms>-<seq>`), shared by Redis and the in-memory store.

pub mod bound;
pub mod browser;
pub mod frame;
pub mod keys;
pub mod love;
pub mod metrics;
pub mod msgpack;
pub mod spool;
pub mod stored;
pub mod stream_id;
pub mod throttle;
pub mod topic;
pub mod value;

pub use bound::OnFull;
pub use frame::{
    decode_frame, encode_frame, DecodeError, EncodeError, FieldSchema, FrameBuffer, Hello, IngestFrame,
    ProducerFrame, Sample, TopicSchema, MAX_FRAME_LEN, PROTOCOL_VERSION,
};
pub use stored::StoredSample;
pub use stream_id::StreamId;
pub use topic::{Category, Csc, CscId, NameError, SalIndex, TopicId, AGGREGATED_CSCS};
pub use value::{Fields, Value, ValueKind};

/// Seconds since the Unix epoch as `f64`, the timestamp unit of every
/// sample (the observatory's middleware uses the same unit for `private_sndStamp`).
pub fn unix_now(now: std::time::SystemTime) -> f64 {
    now.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
