//! A browser's WebSocket text → request: any text gives a request or an
//! error naming the field, never a panic. The same text through the
//! MessagePack transcoder (stored fields → binary frames): an error or
//! bytes that decode as MessagePack, and any bytes through the decoder.
#![no_main]

#[path = "bounded_alloc.rs"]
mod bounded_alloc;

use libfuzzer_sys::fuzz_target;
use meridian_proto::browser::ClientRequest;
use meridian_proto::msgpack;

fuzz_target!(|data: &[u8]| {
    let _ = msgpack::decode(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ClientRequest::parse(text);
        let mut out = Vec::new();
        if msgpack::transcode_json(text, &mut out).is_ok() {
            msgpack::decode(&out).expect("transcoded JSON is valid MessagePack");
        }
    }
});
