//! The policy-set suite on `ReferenceSetLimiter`: the invariants of
//! `SPEC.md` section 5 on random sets and sequences, a set of one against
//! the policy alone, the differential runner, and mutants of the reference
//! each suite must catch (so none of them can pass vacuously).

use async_trait::async_trait;
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestCaseError, TestRng, TestRunner};
use ratelimit_conformance::sets::differential::run_against_reference;
use ratelimit_conformance::sets::invariants::{check_set_invariants, check_set_of_one};
use ratelimit_conformance::sets::strategy::{set_case, SetSequenceOptions};
use ratelimit_conformance::sets::RunOptions;
use ratelimit_conformance::strategy::{awkward_keys, cases, small_policy, SequenceOptions};
use ratelimit_conformance::Violation;
use ratelimit_core::{
    Error, ManualClock, PolicySet, Receipt, ReferenceLimiter, ReferenceSetLimiter, SetCheck,
    SetDecision, SetLimiter,
};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime builds")
        .block_on(f)
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn the_reference_keeps_every_set_invariant(
        (set, start, ops) in set_case(SetSequenceOptions::default())
    ) {
        let clock = ManualClock::new(start);
        let limiter = ReferenceSetLimiter::with_clock(set, clock.clone());
        let result = block_on(check_set_invariants(&limiter, &clock, start, &ops, RunOptions::default()));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn the_reference_keeps_every_set_invariant_with_a_forward_clock(
        (set, start, ops) in set_case(SetSequenceOptions::default().with_backwards(false))
    ) {
        let clock = ManualClock::new(start);
        let limiter = ReferenceSetLimiter::with_clock(set, clock.clone());
        let result = block_on(check_set_invariants(&limiter, &clock, start, &ops, RunOptions::default()));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn remote_drops_keep_every_set_invariant(
        (set, start, ops) in set_case(SetSequenceOptions::default().with_max_len(20))
    ) {
        let clock = ManualClock::new(start);
        let limiter = ReferenceSetLimiter::with_clock(set, clock.clone());
        let result = block_on(check_set_invariants(&limiter, &clock, start, &ops, RunOptions::remote()));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn a_set_of_one_is_the_policy_alone(
        (policy, start, steps) in small_policy().prop_flat_map(|p| {
            (Just(p), ratelimit_conformance::strategy::start_time(),
             ratelimit_conformance::strategy::steps(&p, SequenceOptions::default()))
        })
    ) {
        let clock = ManualClock::new(start);
        let set = ReferenceSetLimiter::with_clock(PolicySet::single(policy), clock.clone());
        let alone = ReferenceLimiter::with_clock(policy, clock.clone());
        let keys = awkward_keys();
        let result = block_on(check_set_of_one(&set, &alone, &clock, &keys[..3], start, &steps));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn the_differential_runner_accepts_the_reference(
        (set, start, ops) in set_case(SetSequenceOptions::default().with_resets(true).with_keys(3))
    ) {
        let clock = ManualClock::new(start);
        let limiter = ReferenceSetLimiter::with_clock(set, clock.clone());
        let keys = awkward_keys();
        let result = block_on(run_against_reference(&limiter, &clock, &keys[..3], start, &ops, RunOptions::default()));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

/// A deliberate fault in a wrapped reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Refunds one unit more than asked on every refund.
    OverRefund,
    /// `release` does nothing.
    LeakyRelease,
    /// Every denied policy's `retry_after` is 1 µs short.
    ShortRetry,
    /// A denied set still takes from the policies that allowed.
    PartialDenial,
    /// Settling `actual == taken` on a window refunds one.
    SettleTakenRefunds,
}

#[derive(Debug)]
struct Faulty {
    inner: ReferenceSetLimiter,
    fault: Fault,
}

#[async_trait]
impl SetLimiter for Faulty {
    fn policy_set(&self) -> &PolicySet {
        self.inner.policy_set()
    }

    async fn check_set(&self, key: &[u8], costs: &[u64]) -> Result<SetCheck, Error> {
        let mut check = self.inner.check_set_sync(key, costs)?;
        if !check.decision.allowed {
            match self.fault {
                Fault::ShortRetry => {
                    let ds: Vec<_> = check
                        .decision
                        .decisions
                        .iter()
                        .zip(costs)
                        .map(|(d, &c)| {
                            let mut d = *d;
                            if c == 0 {
                                return d;
                            }
                            d.retry_after = d
                                .retry_after
                                .map(|r| r.saturating_sub(std::time::Duration::from_micros(1)));
                            d
                        })
                        .collect();
                    check.decision = SetDecision::from_decisions(ds);
                }
                Fault::PartialDenial => {
                    // Take the costs of the policies that allowed, gating on
                    // the others: what a backend applying policies one by one
                    // would do (it changes the key whenever a denier still
                    // has a unit left).
                    let partial: Vec<u64> = costs
                        .iter()
                        .zip(check.decision.decisions.iter())
                        .map(|(&c, d)| if d.allowed { c } else { 0 })
                        .collect();
                    if let Ok(extra) = self.inner.check_set_sync(key, &partial) {
                        drop(extra.receipt);
                    }
                }
                _ => {}
            }
        }
        Ok(check)
    }

    async fn settle(&self, receipt: Receipt, actual: &[u64]) -> Result<SetDecision, Error> {
        let taken = receipt.taken();
        let actual: Vec<u64> = match self.fault {
            Fault::OverRefund => actual
                .iter()
                .zip(&taken)
                .map(|(&a, &t)| if a < t { a.saturating_sub(1) } else { a })
                .collect(),
            Fault::SettleTakenRefunds => actual
                .iter()
                .zip(&taken)
                .zip(self.policy_set().limits())
                .map(|((&a, &t), l)| {
                    if a == t && l.settles() && l.limit().window().is_some() {
                        a.saturating_sub(1)
                    } else {
                        a
                    }
                })
                .collect(),
            _ => actual.to_vec(),
        };
        self.inner.settle_sync(receipt, &actual)
    }

    async fn renew(&self, receipt: &mut Receipt) -> Result<bool, Error> {
        Ok(self.inner.renew_sync(receipt))
    }

    async fn peek_set(&self, key: &[u8]) -> Result<SetDecision, Error> {
        Ok(self.inner.peek_set_sync(key))
    }

    async fn reset_set(&self, key: &[u8]) -> Result<(), Error> {
        self.inner.reset_set_sync(key);
        Ok(())
    }

    fn release(&self, receipt: Receipt) {
        if self.fault != Fault::LeakyRelease {
            self.inner.release(receipt);
        }
    }
}

/// A runner with a fixed seed (a fault is caught on the same cases every
/// run) and little shrinking.
fn faulty_runner() -> TestRunner {
    let config = ProptestConfig {
        failure_persistence: None,
        max_shrink_iters: 100,
        ..ProptestConfig::with_cases(2_000)
    };
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

/// The first violation the invariant suite finds on `fault` in up to
/// 2,000 random cases, if any.
fn invariants_catch(fault: Fault, options: SetSequenceOptions) -> Option<String> {
    let mut runner = faulty_runner();
    let result = runner.run(&set_case(options), |(set, start, ops)| {
        let clock = ManualClock::new(start);
        let limiter = Faulty {
            inner: ReferenceSetLimiter::with_clock(set, clock.clone()),
            fault,
        };
        block_on(check_set_invariants(
            &limiter,
            &clock,
            start,
            &ops,
            RunOptions::default(),
        ))
        .map_err(|v: Violation| TestCaseError::fail(v.to_string()))
    });
    result.err().map(|e| e.to_string())
}

fn differential_catches(fault: Fault) -> Option<String> {
    let mut runner = faulty_runner();
    let result = runner.run(
        &set_case(SetSequenceOptions::default()),
        |(set, start, ops)| {
            let clock = ManualClock::new(start);
            let limiter = Faulty {
                inner: ReferenceSetLimiter::with_clock(set, clock.clone()),
                fault,
            };
            let keys = awkward_keys();
            block_on(run_against_reference(
                &limiter,
                &clock,
                &keys[..2],
                start,
                &ops,
                RunOptions::default(),
            ))
            .map_err(|v: Violation| TestCaseError::fail(v.to_string()))
        },
    );
    result.err().map(|e| e.to_string())
}

#[test]
fn faults_are_caught() {
    let forward = SetSequenceOptions::default().with_backwards(false);
    for (fault, options, expect) in [
        (Fault::OverRefund, forward, &["S1"][..]),
        (
            Fault::OverRefund,
            SetSequenceOptions::default(),
            &["S1", "S2"],
        ),
        (Fault::LeakyRelease, forward, &["C2"]),
        (Fault::ShortRetry, forward, &["invariant 3"]),
        // A partial denial shows at once when a denier still had a unit
        // left, else in the replay that checks the retry.
        (Fault::PartialDenial, forward, &["5.1", "invariant 3"]),
        (Fault::SettleTakenRefunds, forward, &["S3"]),
    ] {
        let found = invariants_catch(fault, options)
            .unwrap_or_else(|| panic!("{fault:?} passed the invariants"));
        assert!(
            expect.iter().any(|e| found.contains(e)),
            "{fault:?} was caught, but not by {expect:?}: {found}"
        );
    }
    for fault in [
        Fault::OverRefund,
        Fault::LeakyRelease,
        Fault::ShortRetry,
        Fault::SettleTakenRefunds,
    ] {
        assert!(
            differential_catches(fault).is_some(),
            "{fault:?} passed the differential"
        );
    }
}

#[test]
fn the_reference_passes_the_set_scenarios() {
    for options in [RunOptions::default(), RunOptions::remote()] {
        block_on(ratelimit_conformance::sets::scenarios::run_all(
            |set, clock| async move {
                std::sync::Arc::new(ReferenceSetLimiter::with_clock(set, clock))
                    as std::sync::Arc<dyn SetLimiter>
            },
            options,
        ))
        .unwrap_or_else(|v| panic!("{v}"));
    }
}
