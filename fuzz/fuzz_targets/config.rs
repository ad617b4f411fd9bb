//! Configuration parsing: TOML, JSON, duration and rate strings.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        ratelimit_fuzz::config(text);
    }
});
