//! Frames of `meridian-proto`'s wire format on quinn streams.
//!
//! A QUIC stream pair is split between tasks (one writes batches while
//! another reads acknowledgements), so each direction is its own type:
//! [`FramedRecv`] buffers bytes until proto's decoder has a whole frame,
//! [`FramedSend`] encodes and writes one. A stream the peer finishes between
//! two frames is a clean end (`Ok(None)`); one it finishes inside a frame is
//! [`FrameError::Truncated`], never a clean end.

use meridian_proto::{encode_frame, DecodeError, EncodeError, FrameBuffer};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bytes asked of a QUIC stream per read.
const READ_CHUNK: usize = 64 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer finished the stream inside a frame (`buffered` bytes of it
    /// arrived): it is broken or crashed mid-write. Close the stream as a
    /// protocol error; nothing of the partial frame is usable.
    #[error("stream ended inside a frame ({buffered} bytes left over)")]
    Truncated { buffered: usize },
    /// A length prefix over `MAX_FRAME_LEN`: the peer is broken or hostile.
    /// Close the stream; nothing was allocated for it.
    #[error("frame length {len} exceeds the limit MAX_FRAME_LEN = {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The payload is not a frame of the expected type: close the stream and
    /// tell the peer `field` and `reason`.
    #[error("malformed frame: {field}: {reason}")]
    Malformed { field: &'static str, reason: String },
    /// Our own frame could not be encoded (too large: send fewer samples per
    /// frame). Nothing was written.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The stream or its connection failed while reading (reset, closed,
    /// timed out): the connection is lost, not malformed; reconnect.
    #[error(transparent)]
    Read(#[from] quinn::ReadError),
    /// The stream or its connection failed while writing: likewise lost.
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
}

impl FrameError {
    /// Whether the connection was lost (a network fault, retried), as
    /// opposed to a peer that sent something wrong (a protocol error).
    pub fn is_lost(&self) -> bool {
        matches!(self, FrameError::Read(_) | FrameError::Write(_))
    }
}

impl From<DecodeError> for FrameError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::TooLarge { len, max } => FrameError::TooLarge { len, max },
            DecodeError::Malformed { field, reason } => FrameError::Malformed { field, reason },
            // The buffer answers "need more bytes" with `None`, never this.
            DecodeError::Incomplete { needed } => FrameError::Malformed {
                field: "frame",
                reason: format!("incomplete: {needed} more bytes needed"),
            },
        }
    }
}

/// The receiving half of a stream, read one frame at a time.
pub struct FramedRecv {
    stream: quinn::RecvStream,
    buffer: FrameBuffer,
}

impl FramedRecv {
    pub fn new(stream: quinn::RecvStream) -> Self {
        FramedRecv {
            stream,
            buffer: FrameBuffer::new(),
        }
    }

    /// The next frame; `Ok(None)` once the peer finished the stream at a
    /// frame boundary.
    pub async fn read_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        loop {
            if let Some(frame) = self.buffer.next_frame()? {
                return Ok(Some(frame));
            }
            match self.stream.read_chunk(READ_CHUNK, true).await? {
                Some(chunk) => self.buffer.extend(&chunk.bytes),
                None => {
                    return match self.buffer.buffered() {
                        0 => Ok(None),
                        buffered => Err(FrameError::Truncated { buffered }),
                    }
                }
            }
        }
    }

    /// The stream itself (to stop it, or read its id).
    pub fn stream_mut(&mut self) -> &mut quinn::RecvStream {
        &mut self.stream
    }
}

/// The sending half of a stream, written one frame at a time.
pub struct FramedSend {
    stream: quinn::SendStream,
    buf: Vec<u8>,
}

impl FramedSend {
    pub fn new(stream: quinn::SendStream) -> Self {
        FramedSend {
            stream,
            buf: Vec::new(),
        }
    }

    /// Encodes `frame` and writes it whole.
    pub async fn write_frame<T: Serialize>(&mut self, frame: &T) -> Result<(), FrameError> {
        self.buf.clear();
        encode_frame(frame, &mut self.buf)?;
        self.stream.write_all(&self.buf).await?;
        Ok(())
    }

    /// Writes a frame encoded beforehand with [`meridian_proto::encode_frame`]
    /// (a producer encodes in its loop and queues bytes, so the loop never
    /// waits on the network).
    pub async fn write_encoded(&mut self, frame: &[u8]) -> Result<(), FrameError> {
        self.stream.write_all(frame).await?;
        Ok(())
    }

    /// Ends the stream after what was written; `Err` if it was already
    /// finished or reset.
    pub fn finish(&mut self) -> Result<(), quinn::ClosedStream> {
        self.stream.finish()
    }

    /// The stream itself (priority, `stopped`, reset).
    pub fn stream_mut(&mut self) -> &mut quinn::SendStream {
        &mut self.stream
    }

    /// The stream, for a caller done with frames.
    pub fn into_stream(self) -> quinn::SendStream {
        self.stream
    }
}
