//! A stored sample as the frontend hands it to browsers: read from the store
//! once, encoded once per protocol however many browsers receive it.

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use meridian_proto::{keys, unix_now, CscId, StoredSample, StreamId, TopicId};
use meridian_store::Entry;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

/// One stream entry, decoded once and shared (behind an `Arc`) by every
/// browser that receives it.
#[derive(Debug)]
pub struct Delivered {
    /// The topic, of the publishing instance (for aggregated CSCs, from the entry).
    pub topic: TopicId,
    /// `keys::stream(&topic)`, computed once: every browser's inbox keys on it.
    pub key: Arc<str>,
    /// `topic` as text (unique per instance), computed once: the key of
    /// conflated telemetry in every browser's inbox.
    pub topic_key: Arc<str>,
    pub id: StreamId,
    /// When the CSC published it, Unix seconds.
    pub source_ts: f64,
    /// When the ingest manager received it.
    pub ingest_ts: f64,
    /// When this frontend read it from the store.
    pub read_ts: f64,
    /// The fields as stored: a JSON object.
    pub fields: Box<str>,
    native: OnceLock<Box<str>>,
    /// The native sample as MessagePack, made when a browser asked for binary frames.
    binary: OnceLock<Box<[u8]>>,
    /// The replaced system's encodings (one per message flavour), allocated on first use.
    love: OnceLock<Box<[OnceLock<Utf8Bytes>; LOVE_SLOTS]>>,
}

/// Encodings of one sample the replaced system's protocol may need (one
/// per message flavour, see `love::encode`).
pub const LOVE_SLOTS: usize = 6;

impl Delivered {
    /// Decodes a stream entry of `topic` (of its instance, for aggregated CSCs);
    /// `None` (and a warning naming the field) for an entry that no
    /// Meridian writer wrote ([`StoredSample::from_fields`]).
    pub fn from_entry(topic: &TopicId, entry: &Entry) -> Option<Delivered> {
        let sample = match StoredSample::from_fields(&entry.fields) {
            Ok(sample) => sample,
            Err(e) => {
                tracing::warn!(key = %keys::stream(topic), id = %entry.id, error = %e, "skipping a stream entry");
                return None;
            }
        };
        let mut topic = topic.clone();
        if topic.csc.is_aggregated() {
            topic.csc = CscId {
                csc: topic.csc.csc.clone(),
                salindex: sample.salindex?,
            };
        }
        Some(Delivered {
            key: keys::stream(&topic).into(),
            topic_key: topic.to_string().into(),
            topic,
            id: entry.id,
            source_ts: sample.source_ts,
            ingest_ts: sample.ingest_ts,
            read_ts: unix_now(SystemTime::now()),
            fields: sample.fields.into(),
            native: OnceLock::new(),
            binary: OnceLock::new(),
            love: OnceLock::new(),
        })
    }

    /// The native protocol's sample object (see `docs/protocol.md`), encoded once.
    pub fn native_json(&self) -> &str {
        self.native.get_or_init(|| {
            meridian_proto::browser::sample_message(
                &self.topic,
                self.id,
                self.source_ts,
                self.ingest_ts,
                self.read_ts,
                &self.fields,
            )
            .into_boxed_str()
        })
    }

    /// The native sample as MessagePack (`docs/protocol.md`, binary
    /// frames), encoded once. Fields that the ingest stored as invalid JSON
    /// (never written by Meridian) go out as nil, with a warning here.
    pub fn native_msgpack(&self) -> &[u8] {
        self.binary.get_or_init(|| {
            let (bytes, err) = meridian_proto::msgpack::sample_message(
                &self.topic,
                self.id,
                self.source_ts,
                self.ingest_ts,
                self.read_ts,
                &self.fields,
            );
            if let Some(err) = err {
                tracing::warn!(key = %self.key, id = %self.id, error = %err, "stored fields are not JSON: sent as nil");
            }
            bytes.into_boxed_slice()
        })
    }

    /// The replaced system's encoding number `slot` (< [`LOVE_SLOTS`]) of
    /// this sample, made by `encode` the first time and shared afterwards:
    /// every browser gets the same bytes (a reference count, not a copy).
    pub fn love_json(&self, slot: usize, encode: impl FnOnce(&Delivered) -> String) -> Utf8Bytes {
        let slots = self.love.get_or_init(Box::default);
        slots[slot % LOVE_SLOTS]
            .get_or_init(|| Utf8Bytes::from(encode(self)))
            .clone()
    }

    /// Approximate memory held, for per-connection bounds.
    pub fn size(&self) -> usize {
        128 + self.fields.len() * 2
    }
}

/// One tick's samples for every browser with the same live topics: built
/// once by the hub and queued (an `Arc`, not a copy) to each of them, so a
/// thousand browsers watching the same plots cost one batch and one
/// encoding per tick, then one socket write each.
#[derive(Debug)]
pub struct Tick {
    /// Events in stream order (per topic), then the newest telemetry of each topic.
    pub samples: Vec<Arc<Delivered>>,
    /// Approximate memory held, counted in full against each browser's bound.
    pub size: usize,
    /// What a browser that falls behind may skip: the feed's id and, if the
    /// tick holds only one telemetry sample per stream, which of the feed's
    /// streams (bit `i` for its `i`-th stream). A newer tick of the same
    /// feed covering all of them makes this one redundant.
    pub cover: Option<(u64, Vec<u64>)>,
    /// When the oldest sample was read from the store (Unix seconds): the
    /// start of the frontend → browser hop of this tick's frame.
    pub oldest_read: f64,
    native: OnceLock<Utf8Bytes>,
    binary: OnceLock<Bytes>,
}

impl Tick {
    pub fn new(samples: Vec<Arc<Delivered>>) -> Tick {
        Self::covering(samples, None)
    }

    /// A tick with its [`Tick::cover`].
    pub fn covering(samples: Vec<Arc<Delivered>>, cover: Option<(u64, Vec<u64>)>) -> Tick {
        let size = samples.iter().map(|s| s.size()).sum();
        let oldest_read = samples.iter().map(|s| s.read_ts).fold(f64::INFINITY, f64::min);
        Tick {
            samples,
            size,
            cover,
            oldest_read,
            native: OnceLock::new(),
            binary: OnceLock::new(),
        }
    }

    /// Whether `newer` ticks (of the same feed) carry a newer value of every topic of this one.
    pub fn superseded_by<'a>(&self, newer: impl Iterator<Item = &'a Arc<Tick>>) -> bool {
        let Some((feed, bits)) = &self.cover else {
            return false;
        };
        let mut missing = bits.clone();
        for tick in newer {
            let Some((f, b)) = &tick.cover else { return false };
            if f != feed {
                return false;
            }
            for (m, b) in missing.iter_mut().zip(b) {
                *m &= !b;
            }
            if missing.iter().all(|m| *m == 0) {
                return true;
            }
        }
        false
    }

    /// Whether the tick holds any event (losing it would lose data, not just conflate).
    pub fn has_events(&self) -> bool {
        self.samples
            .iter()
            .any(|s| s.topic.category == meridian_proto::Category::Event)
    }

    /// The native protocol's batch frame of this tick, encoded by the first
    /// browser that sends it and shared by the rest.
    pub fn native_frame(&self) -> Utf8Bytes {
        self.native
            .get_or_init(|| {
                Utf8Bytes::from(meridian_proto::browser::batch_frame(
                    self.samples.iter().map(|s| s.native_json()),
                    &[],
                ))
            })
            .clone()
    }

    /// The same frame as MessagePack, for browsers that asked for binary
    /// frames: also encoded once and shared.
    pub fn binary_frame(&self) -> Bytes {
        self.binary
            .get_or_init(|| {
                Bytes::from(meridian_proto::msgpack::batch_frame(
                    self.samples.iter().map(|s| s.native_msgpack()),
                    &[],
                ))
            })
            .clone()
    }
}
