//! Property tests: every invariant of SPEC section 4 that holds without a
//! backend (1 to 8), for every algorithm, over random sequences of
//! (clock step, key, operation) with steps from 0 µs to many windows and
//! occasional steps hours back.
//!
//! Each test enables exactly one invariant of
//! `ratelimit_conformance::invariants`, so a broken invariant fails the test
//! named after it.

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use ratelimit_conformance::differential::check_against_model;
use ratelimit_conformance::invariants::{check_sequence, Invariant};
use ratelimit_conformance::strategy::{awkward_keys, scenario, SequenceOptions};
use ratelimit_core::{AlgorithmName, ManualClock, Policy, ReferenceLimiter};

fn config() -> Config {
    Config {
        // `PROPTEST_CASES` still overrides this for longer local runs.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(256),
        // Beside this file, so the regressions are committed and replayed.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

fn holds(
    policy: &Policy,
    start: u64,
    steps: &[ratelimit_conformance::ops::Step],
    invariant: Invariant,
) -> Result<(), TestCaseError> {
    check_sequence(policy, start, steps, &[invariant])
        .map_err(|v| TestCaseError::fail(v.to_string()))
}

/// Invariant 8 (keys): awkward byte strings stored by the reference limiter
/// behave as independent keys, decision for decision with the pure model.
fn keys_never_collide(
    policy: &Policy,
    start: u64,
    steps: &[ratelimit_conformance::ops::Step],
) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(start);
    let limiter = ReferenceLimiter::with_clock(*policy, clock.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime builds");
    runtime
        .block_on(check_against_model(
            &limiter,
            &clock,
            policy,
            &awkward_keys(),
            start,
            steps,
        ))
        .map_err(|v| TestCaseError::fail(v.to_string()))
}

macro_rules! invariant_tests {
    ($module:ident, $algorithm:expr) => {
        mod $module {
            use super::*;

            proptest! {
                #![proptest_config(config())]

                #[test]
                fn inv1_denials_are_free((policy, start, steps) in scenario($algorithm, SequenceOptions::default())) {
                    holds(&policy, start, &steps, Invariant::DenialsAreFree)?;
                }

                #[test]
                fn inv2_remaining_is_exact((policy, start, steps) in scenario($algorithm, SequenceOptions::default())) {
                    holds(&policy, start, &steps, Invariant::RemainingIsExact)?;
                }

                #[test]
                fn inv3_retry_after_is_exact((policy, start, steps) in scenario($algorithm, SequenceOptions::default())) {
                    holds(&policy, start, &steps, Invariant::RetryAfterIsExact)?;
                }

                #[test]
                fn inv4_reset_after_is_exact((policy, start, steps) in scenario($algorithm, SequenceOptions::default())) {
                    holds(&policy, start, &steps, Invariant::ResetAfterIsExact)?;
                }

                #[test]
                fn inv5_throughput_bounds((policy, start, steps) in scenario($algorithm, SequenceOptions::forward().with_keys(2).with_max_len(200))) {
                    holds(&policy, start, &steps, Invariant::ThroughputBounds)?;
                }

                #[test]
                fn inv6_liveness((policy, start, steps) in scenario($algorithm, SequenceOptions::default())) {
                    holds(&policy, start, &steps, Invariant::Liveness)?;
                }

                #[test]
                fn inv7_clock_going_back((policy, start, steps) in scenario($algorithm, SequenceOptions::default())) {
                    holds(&policy, start, &steps, Invariant::ClockGoingBack)?;
                }

                #[test]
                fn inv8_cost_out_of_range((policy, start, steps) in scenario($algorithm, SequenceOptions::default())) {
                    holds(&policy, start, &steps, Invariant::CostOutOfRange)?;
                }

                #[test]
                fn inv8_keys_never_collide((policy, start, steps) in scenario($algorithm, SequenceOptions::default().with_keys(awkward_keys().len()))) {
                    keys_never_collide(&policy, start, &steps)?;
                }
            }
        }
    };
}

invariant_tests!(fixed_window, AlgorithmName::FixedWindow);
invariant_tests!(sliding_window, AlgorithmName::SlidingWindow);
invariant_tests!(token_bucket, AlgorithmName::TokenBucket);
