//! `MemorySetLimiter` against the conformance suite for policy sets: the
//! hand-written scenarios, every invariant of `SPEC.md` section 5 on random
//! sets and sequences, and the differential runner against
//! `ReferenceSetLimiter` (receipts compared but for lease ids).

use std::sync::Arc;

use proptest::prelude::*;
use ratelimit_conformance::sets::differential::run_against_reference;
use ratelimit_conformance::sets::invariants::check_set_invariants;
use ratelimit_conformance::sets::strategy::{set_case, SetSequenceOptions};
use ratelimit_conformance::sets::{scenarios, RunOptions};
use ratelimit_conformance::strategy::{awkward_keys, cases};
use ratelimit_core::{ManualClock, SetLimiter};
use ratelimit_memory::MemorySetLimiter;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime builds")
        .block_on(f)
}

#[test]
fn the_set_scenarios_pass() {
    block_on(scenarios::run_all(
        |set, clock| async move {
            Arc::new(MemorySetLimiter::with_clock(set, clock)) as Arc<dyn SetLimiter>
        },
        RunOptions::default(),
    ))
    .unwrap();
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn every_set_invariant_holds(
        (set, start, ops) in set_case(SetSequenceOptions::default())
    ) {
        let clock = ManualClock::new(start);
        let limiter = MemorySetLimiter::with_clock(set, clock.clone());
        let result = block_on(check_set_invariants(&limiter, &clock, start, &ops, RunOptions::default()));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn every_set_invariant_holds_with_a_forward_clock(
        (set, start, ops) in set_case(SetSequenceOptions::default().with_backwards(false))
    ) {
        let clock = ManualClock::new(start);
        let limiter = MemorySetLimiter::with_clock(set, clock.clone());
        let result = block_on(check_set_invariants(&limiter, &clock, start, &ops, RunOptions::default()));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn agrees_with_the_reference(
        (set, start, ops) in set_case(SetSequenceOptions::default().with_resets(true).with_keys(3))
    ) {
        let clock = ManualClock::new(start);
        let limiter = MemorySetLimiter::with_clock(set, clock.clone());
        let keys = awkward_keys();
        let result = block_on(run_against_reference(&limiter, &clock, &keys[..3], start, &ops, RunOptions::default()));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}
