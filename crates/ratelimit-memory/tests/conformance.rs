//! The workspace's conformance suite and differential tests, run against
//! the memory backend.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use ratelimit_conformance::differential::check_against_model;
use ratelimit_conformance::differential::Step;
use ratelimit_conformance::strategy::{
    any_policy, awkward_keys, start_time, steps, SequenceOptions,
};
use ratelimit_core::{Limiter, ManualClock, Policy};
use ratelimit_memory::{MemoryLimiter, MemoryLimiterOptions};

/// The furthest a generated sequence can take the clock below the latest
/// time it showed: 60 steps of at most three hours back.
const WAY_BACK: Duration = Duration::from_secs(60 * 3 * 3600);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime builds")
}

/// One shard, so that every insert's sweep step walks over the other keys
/// and any reclaiming that changed a decision would show.
fn one_shard() -> MemoryLimiterOptions {
    MemoryLimiterOptions::default().with_shards(NonZeroUsize::MIN)
}

fn differential(
    policy: Policy,
    start: u64,
    steps: &[Step],
    options: MemoryLimiterOptions,
) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(start);
    let limiter = MemoryLimiter::with_options(policy, clock.clone(), options);
    let result = runtime().block_on(check_against_model(
        &limiter,
        &clock,
        &policy,
        &awkward_keys(),
        start,
        steps,
    ));
    prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    Ok(())
}

#[test]
fn scenarios_pass_with_default_options() {
    runtime()
        .block_on(ratelimit_conformance::scenarios::run_all(
            |policy, clock| async move {
                Arc::new(MemoryLimiter::with_clock(policy, clock)) as Arc<dyn Limiter>
            },
        ))
        .unwrap();
}

#[test]
fn scenarios_pass_on_one_shard_with_a_cap() {
    let options = one_shard().with_max_keys(NonZeroUsize::new(64).unwrap());
    runtime()
        .block_on(ratelimit_conformance::scenarios::run_all(
            move |policy, clock| async move {
                Arc::new(MemoryLimiter::with_options(policy, clock, options)) as Arc<dyn Limiter>
            },
        ))
        .unwrap();
}

#[test]
fn policies_lists_the_one_policy() {
    let policy = Policy::fixed_window(5, Duration::from_secs(30)).unwrap();
    let limiter = MemoryLimiter::with_clock(policy, ManualClock::new(0));
    assert_eq!(Limiter::policies(&limiter), &[policy]);
}

proptest! {
    /// Invariant 9 with reclaiming at work: forward-moving time, awkward
    /// keys on one shard, default grace of zero.
    #[test]
    fn agrees_with_the_model_while_reclaiming(
        (policy, start, steps) in any_policy().prop_flat_map(|p| {
            let keys = awkward_keys().len();
            (Just(p), start_time(), steps(&p, SequenceOptions::forward().with_keys(keys)))
        })
    ) {
        differential(policy, start, &steps, one_shard())?;
    }

    /// Invariant 9 with resets and a clock that goes back: identical to the
    /// model when the grace covers the way back below the latest time seen.
    /// Each step goes back at most three hours, so 60 steps at most 180.
    #[test]
    fn agrees_with_the_model_when_the_clock_goes_back(
        (policy, start, steps) in any_policy().prop_flat_map(|p| {
            let keys = awkward_keys().len();
            (Just(p), start_time(), steps(&p, SequenceOptions::default().with_keys(keys)))
        })
    ) {
        let options = one_shard().with_idle_grace(WAY_BACK);
        differential(policy, start, &steps, options)?;
    }

    /// Invariant 9 with the default shard count and clock going back.
    #[test]
    fn agrees_with_the_model_with_default_shards(
        (policy, start, steps) in any_policy().prop_flat_map(|p| {
            let keys = awkward_keys().len();
            (Just(p), start_time(), steps(&p, SequenceOptions::default().with_keys(keys)))
        })
    ) {
        let options = MemoryLimiterOptions::default().with_idle_grace(WAY_BACK);
        differential(policy, start, &steps, options)?;
    }
}
