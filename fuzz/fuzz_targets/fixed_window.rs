//! Random operation sequences on the fixed window policy, checked against every
//! invariant of SPEC section 4.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ratelimit_core::AlgorithmName;
use ratelimit_fuzz::{run, Input};

fuzz_target!(|input: Input| run(AlgorithmName::FixedWindow, &input));
