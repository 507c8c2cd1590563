//! Producer ↔ ingest frames on QUIC streams.
//!
//! Every frame is a 4-byte big-endian length followed by that many bytes of
//! bincode (2.x, standard configuration). A connection opens with a
//! [`Hello`] on its first bidirectional stream naming the protocol version,
//! the CSC, its SAL index and its topic schemas; the ingest manager answers
//! [`IngestFrame::Welcome`] or [`IngestFrame::Refused`].
//!
//! Decoding never panics and never allocates beyond [`MAX_FRAME_LEN`]:
//! "need more bytes" is [`DecodeError::Incomplete`], not an error of the
//! peer; everything else is a typed error naming the field and the limit.

use crate::topic::Category;
use crate::value::{Fields, ValueKind};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Version of this frame format, sent in [`Hello`]. Bumped on any change to
/// the types in this file; an ingest manager refuses versions it does not speak.
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest frame payload, in bytes. A batch of M1M3 telemetry (~156 floats
/// per topic, several topics) is ~10 KiB; 8 MiB leaves room for large
/// handshakes (schemas of every topic) while bounding what a peer can make
/// us allocate.
pub const MAX_FRAME_LEN: usize = 8 * 1024 * 1024;

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// QUIC application close codes an ingest manager closes a producer
/// connection with, so the producer can tell a refusal (fix the
/// configuration) from a passing condition (reconnect, with backoff).
pub mod close_code {
    /// The ingest manager is shutting down: reconnect (to another one).
    /// Transient, even when it arrives during the handshake.
    pub const DRAINING: u32 = 1;
    /// The producer sent something malformed; the reason says what.
    pub const PROTOCOL_ERROR: u32 = 2;
    /// The handshake was refused (identity, version, names); the reason
    /// says why. The only code after which retrying cannot help.
    pub const REFUSED: u32 = 3;
    /// Too many producers are connected (`ingest.max_producers`): transient.
    pub const BUSY: u32 = 4;

    /// Whether a connection closed with `code` during the handshake should
    /// stop the producer rather than be retried with backoff: a refusal, or
    /// a hello the ingest could not read (sending it again would fail
    /// again). Every other code — [`DRAINING`] from an ingest that is
    /// restarting, [`BUSY`], codes of newer versions — passes.
    pub fn is_refusal(code: u64) -> bool {
        code == u64::from(REFUSED) || code == u64::from(PROTOCOL_ERROR)
    }
}

/// The first frame of a producer connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal [`PROTOCOL_VERSION`].
    pub protocol_version: u16,
    /// Identifies this producer process: exactly-once writes are tracked per
    /// producer id, so a replay after a reconnect is written once. Random at
    /// start; a restarted producer is a new producer.
    pub producer_id: u64,
    /// The CSC this producer serves, e.g. `MTM1M3`.
    pub csc: String,
    /// Its SAL index; 0 with [`Hello::all_indices`] for every instance.
    pub salindex: u32,
    /// The producer serves every instance of the CSC (e.g. every `Script`
    /// a ScriptQueue starts); each sample names its instance.
    pub all_indices: bool,
    /// Every topic the producer may send; samples of other topics are refused.
    pub topics: Vec<TopicSchema>,
}

/// What a topic carries, declared once in the handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicSchema {
    pub name: String,
    pub category: Category,
    /// Nominal publication rate for telemetry, in Hz; `None` for events.
    pub rate_hz: Option<f32>,
    pub fields: Vec<FieldSchema>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldSchema {
    pub name: String,
    pub kind: ValueKind,
    /// Array length, `None` for a scalar.
    pub count: Option<u32>,
    pub units: String,
}

/// One published value of a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Topic name, one of the handshake's schemas.
    pub topic: String,
    pub category: Category,
    /// The publishing instance, for a producer of all indices
    /// ([`Hello::all_indices`]); `None` means the hello's SAL index.
    pub salindex: Option<u32>,
    /// Per-producer sequence number, increasing on each QUIC stream (events
    /// and telemetry count apart); acknowledgements and exactly-once writes
    /// are expressed in it.
    pub seq: u64,
    /// When the CSC published it, Unix seconds.
    pub source_ts: f64,
    pub fields: Fields,
}

/// Frames a producer sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProducerFrame {
    Hello(Hello),
    /// Samples in publication order.
    Batch(Vec<Sample>),
}

/// Frames an ingest manager sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum IngestFrame {
    /// The handshake was accepted.
    Welcome { session: u64 },
    /// The handshake was refused; the connection closes after this frame.
    Refused { reason: String },
    /// Every sample of this stream with `seq <= up_to_seq` is in the store.
    Ack { up_to_seq: u64 },
    /// The peer sent something wrong; the stream closes after this frame.
    Error { reason: String },
}

/// Why bytes are not (yet) a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not enough bytes yet: read at least `needed` more and try again.
    #[error("incomplete frame: {needed} more bytes needed")]
    Incomplete { needed: usize },
    /// The length prefix exceeds [`MAX_FRAME_LEN`]: the peer is broken or hostile; close the stream.
    #[error("frame length {len} exceeds the limit MAX_FRAME_LEN = {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The payload is not a valid frame: close the stream and tell the peer `reason`.
    #[error("malformed frame: {field}: {reason}")]
    Malformed { field: &'static str, reason: String },
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The frame would exceed [`MAX_FRAME_LEN`]: send fewer samples per batch.
    #[error("encoded frame is {len} bytes, over the limit MAX_FRAME_LEN = {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame could not be encoded: {0}")]
    Bincode(String),
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_LEN>()
}

/// Appends `frame`, length-prefixed, to `out`.
pub fn encode_frame<T: Serialize>(frame: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; LEN_PREFIX]);
    if let Err(e) = bincode::serde::encode_into_std_write(frame, out, bincode_config()) {
        out.truncate(start);
        return Err(EncodeError::Bincode(e.to_string()));
    }
    let len = out.len() - start - LEN_PREFIX;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(EncodeError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    out[start..start + LEN_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Reads the payload length of the frame at the start of `buf`.
pub fn frame_len(buf: &[u8]) -> Result<usize, DecodeError> {
    if buf.len() < LEN_PREFIX {
        return Err(DecodeError::Incomplete {
            needed: LEN_PREFIX - buf.len(),
        });
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME_LEN {
        return Err(DecodeError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(len)
}

/// Decodes one frame from the start of `buf`; returns it and the bytes it used.
pub fn decode_frame<T: DeserializeOwned>(buf: &[u8]) -> Result<(T, usize), DecodeError> {
    let len = frame_len(buf)?;
    let total = LEN_PREFIX + len;
    if buf.len() < total {
        return Err(DecodeError::Incomplete {
            needed: total - buf.len(),
        });
    }
    let payload = &buf[LEN_PREFIX..total];
    let (frame, used) =
        bincode::serde::decode_from_slice(payload, bincode_config()).map_err(|e| DecodeError::Malformed {
            field: "payload",
            reason: e.to_string(),
        })?;
    if used != len {
        return Err(DecodeError::Malformed {
            field: "payload",
            reason: format!("{} bytes after the end of the frame", len - used),
        });
    }
    Ok((frame, total))
}

/// Reassembles frames from the bytes of one stream, in whatever pieces
/// they arrive. Holds at most one frame plus one read chunk: a length prefix
/// over [`MAX_FRAME_LEN`] is refused before its payload is buffered.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
}

impl FrameBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream. Call [`FrameBuffer::next_frame`]
    /// until it returns `None` before appending more.
    pub fn extend(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `None` if more bytes are needed.
    pub fn next_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, DecodeError> {
        match decode_frame(&self.buf[self.start..]) {
            Ok((frame, used)) => {
                self.start += used;
                Ok(Some(frame))
            }
            Err(DecodeError::Incomplete { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Bytes received but not yet decoded; non-zero at the end of a stream
    /// means the peer stopped in the middle of a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

impl Hello {
    /// Checks what bincode cannot: the version, the names and the schema sizes.
    pub fn validate(&self) -> Result<crate::CscId, DecodeError> {
        if self.protocol_version != PROTOCOL_VERSION {
            return Err(DecodeError::Malformed {
                field: "hello.protocol_version",
                reason: format!(
                    "version {} is not supported, this ingest speaks {PROTOCOL_VERSION}",
                    self.protocol_version
                ),
            });
        }
        let csc = crate::CscId::new(&self.csc, self.salindex).map_err(|e| DecodeError::Malformed {
            field: "hello.csc",
            reason: e.to_string(),
        })?;
        for t in &self.topics {
            crate::TopicId::new(csc.clone(), t.category, &t.name).map_err(|e| DecodeError::Malformed {
                field: "hello.topics.name",
                reason: e.to_string(),
            })?;
        }
        Ok(csc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn batch() -> ProducerFrame {
        ProducerFrame::Batch(vec![Sample {
            topic: "scalars".into(),
            category: Category::Telemetry,
            salindex: None,
            seq: 7,
            source_ts: 1.7e9,
            fields: vec![("x".into(), Value::Floats(vec![1.0; 156]))],
        }])
    }

    #[test]
    fn frames_round_trip_and_report_their_length() {
        let mut buf = Vec::new();
        encode_frame(&batch(), &mut buf).unwrap();
        encode_frame(&batch(), &mut buf).unwrap();
        let (a, used): (ProducerFrame, _) = decode_frame(&buf).unwrap();
        assert_eq!(a, batch());
        let (b, used2): (ProducerFrame, _) = decode_frame(&buf[used..]).unwrap();
        assert_eq!(b, batch());
        assert_eq!(used + used2, buf.len());
    }

    #[test]
    fn truncated_input_is_incomplete_at_every_cut() {
        let mut buf = Vec::new();
        encode_frame(&batch(), &mut buf).unwrap();
        for cut in 0..buf.len() {
            match decode_frame::<ProducerFrame>(&buf[..cut]) {
                Err(DecodeError::Incomplete { needed }) => assert!(needed > 0),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn oversized_length_is_refused_before_reading_the_payload() {
        let buf = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        let err = decode_frame::<ProducerFrame>(&buf).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooLarge {
                len: MAX_FRAME_LEN + 1,
                max: MAX_FRAME_LEN
            }
        );
        assert!(err.to_string().contains("MAX_FRAME_LEN"));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        // A deterministic walk through many byte patterns, including ones
        // that claim huge vector lengths inside a small frame.
        let mut state = 0x2545F4914F6CDD1Du64;
        for n in 0..2000usize {
            let len = n % 64 + 1;
            let mut buf = (len as u32).to_be_bytes().to_vec();
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                buf.push(state as u8);
            }
            match decode_frame::<ProducerFrame>(&buf) {
                Ok(_) | Err(DecodeError::Malformed { .. }) => {}
                Err(other) => panic!("{other:?}"),
            }
        }
        let huge_vec = [0, 0, 0, 6, 1, 0xFC, 0xFF, 0xFF, 0xFF, 0x7F];
        assert!(matches!(
            decode_frame::<ProducerFrame>(&huge_vec),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn frame_buffer_reassembles_frames_split_anywhere() {
        let mut bytes = Vec::new();
        for _ in 0..3 {
            encode_frame(&batch(), &mut bytes).unwrap();
        }
        for piece in [1, 7, 100, bytes.len()] {
            let mut fb = FrameBuffer::new();
            let mut got = 0;
            for chunk in bytes.chunks(piece) {
                fb.extend(chunk);
                while let Some(frame) = fb.next_frame::<ProducerFrame>().unwrap() {
                    assert_eq!(frame, batch());
                    got += 1;
                }
            }
            assert_eq!(got, 3);
            assert_eq!(fb.buffered(), 0);
        }
    }

    #[test]
    fn hello_with_wrong_version_names_the_field() {
        let hello = Hello {
            protocol_version: 99,
            producer_id: 1,
            all_indices: false,
            csc: "Test".into(),
            salindex: 1,
            topics: vec![],
        };
        let err = hello.validate().unwrap_err();
        assert!(err.to_string().contains("hello.protocol_version"), "{err}");
    }
}
