//! Any bytes as a `Forwarded` field value: the parser never panics, and
//! whatever it reads satisfies the properties in `ratelimit_fuzz::forwarded`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ratelimit_fuzz::forwarded::check(data));
