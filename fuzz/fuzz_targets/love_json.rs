//! A text message to the compatibility endpoint (`meridian_proto::love`),
//! as a browser and as a producer: any text gives a message or an error
//! naming the field or the limit, never a panic; a producer's data message
//! is decoded down to its samples and heartbeat reports, as the endpoint
//! stores them.
#![no_main]

#[path = "bounded_alloc.rs"]
mod bounded_alloc;

use libfuzzer_sys::fuzz_target;
use meridian_proto::love::{self, DataMessage, HeartbeatReport, Message};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for producer in [false, true] {
        if let Ok(Message::Data(message)) = love::parse(text, producer) {
            assert!(producer, "a browser's data message was accepted");
            for entry in &message.entries {
                for (stream, payload) in &entry.streams {
                    let _ = DataMessage::samples(stream, payload);
                    let _ = HeartbeatReport::parse(payload);
                }
            }
        }
    }
    // Only the bare non-finite numbers change, each into `null`: the text
    // never grows by more than one byte per `NaN` (4 bytes for 3).
    let cleaned = love::without_non_finite(text);
    assert!(cleaned.len() <= text.len() + text.matches("NaN").count());
});
