//! A configuration file → a validated configuration: any text gives one or
//! errors naming keys, never a panic (including the key-path lookup of a
//! parse error's position).
#![no_main]

#[path = "bounded_alloc.rs"]
mod bounded_alloc;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = meridian_config::Config::from_toml_str(text);
    }
});
