//! The QUIC glue every Meridian peer shares: frames on quinn streams, and TLS.
//!
//! `meridian-proto` owns the wire format and decodes it without I/O; this
//! crate only moves its frames over quinn streams and sets up the TLS both
//! ends speak, so the producer, the ingest and the benchmark cannot drift
//! apart (they once had three `read_frame`s, one of which took a stream that
//! ended inside a frame for a clean end). It knows nothing of sessions,
//! spools or the store.
//!
//! Layout:
//! - [`framed`]: [`FramedRecv`] / [`FramedSend`], one frame at a time, with [`FrameError`].
//! - [`tls`]: the ingest's identity, the producer's trust, their rustls/quinn configurations.

pub mod framed;
pub mod tls;

pub use framed::{FrameError, FramedRecv, FramedSend};
