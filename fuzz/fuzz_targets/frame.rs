//! QUIC stream bytes → frames, both directions: whatever a peer sends, the
//! decoder returns a frame, "need more bytes" or a typed error; it never
//! panics and never makes one allocation over twice `MAX_FRAME_LEN`
//! ([`bounded_alloc`]). Decoded hellos are validated, and every decoded
//! frame must encode and decode back to itself.
#![no_main]

#[path = "bounded_alloc.rs"]
mod bounded_alloc;

use libfuzzer_sys::fuzz_target;
use meridian_proto::{decode_frame, encode_frame, FrameBuffer, IngestFrame, ProducerFrame};

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the stream is cut into reads, so frames
    // split across reads are exercised too.
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(cut).max(1);
    let mut frames = FrameBuffer::new();
    for piece in bytes.chunks(chunk) {
        frames.extend(piece);
        loop {
            match frames.next_frame::<ProducerFrame>() {
                Ok(Some(frame)) => {
                    if let ProducerFrame::Hello(hello) = &frame {
                        let _ = hello.validate();
                    }
                    round_trip(&frame);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    if let Ok((frame, _)) = decode_frame::<IngestFrame>(bytes) {
        round_trip(&frame);
    }
});

/// Encoding a decoded frame and decoding that gives a frame that encodes to
/// the same bytes (bytes, not values: a NaN field is not equal to itself).
fn round_trip<T>(frame: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut buf = Vec::new();
    if encode_frame(frame, &mut buf).is_ok() {
        let (again, used) = decode_frame::<T>(&buf).expect("an encoded frame decodes");
        assert_eq!(used, buf.len());
        let mut buf2 = Vec::new();
        encode_frame(&again, &mut buf2).expect("it encoded once");
        assert_eq!(buf, buf2);
    }
}
