//! The conformance suite against the reference limiter.

use std::sync::Arc;

use proptest::prelude::*;
use ratelimit_conformance::differential::check_against_model;
use ratelimit_conformance::strategy::{
    any_policy, awkward_keys, start_time, steps, SequenceOptions,
};
use ratelimit_core::{Limiter, ManualClock, ReferenceLimiter};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime builds")
}

#[test]
fn scenarios_pass_on_the_reference_limiter() {
    runtime()
        .block_on(ratelimit_conformance::scenarios::run_all(
            |policy, clock| async move {
                Arc::new(ReferenceLimiter::with_clock(policy, clock)) as Arc<dyn Limiter>
            },
        ))
        .unwrap();
}

proptest! {
    /// Invariant 8 (keys) and 9 for the reference: awkward keys behave as
    /// independent keys, decision for decision with the pure model.
    #[test]
    fn reference_agrees_with_the_model_on_awkward_keys(
        (policy, start, steps) in any_policy().prop_flat_map(|p| {
            let keys = awkward_keys().len();
            (Just(p), start_time(), steps(&p, SequenceOptions::default().with_keys(keys)))
        })
    ) {
        let clock = ManualClock::new(start);
        let limiter = ReferenceLimiter::with_clock(policy, clock.clone());
        let result = runtime().block_on(check_against_model(&limiter, &clock, &policy, &awkward_keys(), start, &steps));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}
