//! A commander request body (both dialects) → command request: any bytes
//! give a request or an error naming the field, never a panic; what could
//! be read is recorded for the audit log either way.
#![no_main]

#[path = "bounded_alloc.rs"]
mod bounded_alloc;

use libfuzzer_sys::fuzz_target;
use meridian_commander::request::{parse, Dialect, Received};

fuzz_target!(|data: &[u8]| {
    for dialect in [Dialect::Love, Dialect::Native] {
        let mut received = Received::default();
        let _ = parse(dialect, data, &mut received);
    }
});
