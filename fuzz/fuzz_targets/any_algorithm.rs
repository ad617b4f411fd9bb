//! Random operation sequences on a policy of any algorithm of
//! `AlgorithmName::ALL` (the input picks it), checked against every
//! invariant of SPEC section 4: an algorithm added to the core is fuzzed
//! here with no new target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ratelimit_fuzz::{run_any, Input};

fuzz_target!(|input: Input| run_any(&input));
