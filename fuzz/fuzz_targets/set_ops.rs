//! Random sequences of policy-set operations (checks with any costs,
//! settles, renewals, releases, peeks, resets, purges, the clock moving
//! both ways) on the memory backend and the reference, which must agree
//! decision for decision and receipt for receipt.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ratelimit_fuzz::sets::{run_sets, SetInput};

fuzz_target!(|input: SetInput| run_sets(&input));
