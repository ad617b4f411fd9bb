//! Property tests: every invariant of `ratelimit_conformance::invariants` that holds without a
//! backend (1 to 8), for every algorithm, over random sequences of
//! (clock step, key, operation) with steps from 0 µs to many windows and
//! occasional steps hours back.
//!
//! Each test enables exactly one invariant of
//! `ratelimit_conformance::invariants`, so a broken invariant fails the test
//! named after it, and runs it on every algorithm of `AlgorithmName::ALL`
//! (its panic names the algorithm).

use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use ratelimit_conformance::differential::check_against_model;
use ratelimit_conformance::invariants::{check_sequence, Invariant};
use ratelimit_conformance::ops::Step;
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
    steps: &[Step],
    invariant: Invariant,
) -> Result<(), TestCaseError> {
    check_sequence(policy, start, steps, &[invariant])
        .map_err(|v| TestCaseError::fail(v.to_string()))
}

/// Invariant 8 (keys): awkward byte strings stored by the reference limiter
/// behave as independent keys, decision for decision with the pure model.
fn keys_never_collide(policy: &Policy, start: u64, steps: &[Step]) -> Result<(), TestCaseError> {
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

/// Runs `test` on `config().cases` scenarios of each algorithm of
/// [`AlgorithmName::ALL`] in turn, so that a new algorithm is tested with no
/// edit here and each one gets the same number of cases.
fn for_every_algorithm(
    options: SequenceOptions,
    test: impl Fn(&Policy, u64, &[Step]) -> Result<(), TestCaseError>,
) {
    for algorithm in AlgorithmName::ALL {
        let mut runner = TestRunner::new(Config {
            // Where `proptest!` would point the regressions file: beside
            // this source file, read before any new case.
            source_file: Some(file!()),
            ..config()
        });
        if let Err(e) = runner.run(&scenario(algorithm, options), |(policy, start, steps)| {
            test(&policy, start, &steps)
        }) {
            panic!("{algorithm}: {e}");
        }
    }
}

/// One test per invariant, each run on every algorithm.
macro_rules! invariant_test {
    ($name:ident, $options:expr, $invariant:expr) => {
        #[test]
        fn $name() {
            for_every_algorithm($options, |policy, start, steps| {
                holds(policy, start, steps, $invariant)
            });
        }
    };
}

invariant_test!(
    inv1_denials_are_free,
    SequenceOptions::default(),
    Invariant::DenialsAreFree
);
invariant_test!(
    inv2_remaining_is_exact,
    SequenceOptions::default(),
    Invariant::RemainingIsExact
);
invariant_test!(
    inv3_retry_after_is_exact,
    SequenceOptions::default(),
    Invariant::RetryAfterIsExact
);
invariant_test!(
    inv4_reset_after_is_exact,
    SequenceOptions::default(),
    Invariant::ResetAfterIsExact
);
invariant_test!(
    inv5_throughput_bounds,
    SequenceOptions::forward().with_keys(2).with_max_len(200),
    Invariant::ThroughputBounds
);
invariant_test!(
    inv6_liveness,
    SequenceOptions::default(),
    Invariant::Liveness
);
invariant_test!(
    inv7_clock_going_back,
    SequenceOptions::default(),
    Invariant::ClockGoingBack
);
invariant_test!(
    inv8_cost_out_of_range,
    SequenceOptions::default(),
    Invariant::CostOutOfRange
);

#[test]
fn inv8_keys_never_collide() {
    for_every_algorithm(
        SequenceOptions::default().with_keys(awkward_keys().len()),
        keys_never_collide,
    );
}
