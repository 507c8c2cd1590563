//! A browser's WebSocket text → request: any text gives a request or an
//! error naming the field, never a panic.
#![no_main]

#[path = "bounded_alloc.rs"]
mod bounded_alloc;

use libfuzzer_sys::fuzz_target;
use meridian_proto::browser::ClientRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ClientRequest::parse(text);
    }
});
