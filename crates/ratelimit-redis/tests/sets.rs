//! Policy sets on Redis (`RedisSetLimiter`): decision for decision against
//! `ReferenceSetLimiter` under one injected clock, on a standalone server
//! and on a 3-master cluster, by this file's own sequences and by the
//! conformance suite's runners (differential, invariants, scenarios).

mod support;

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use ratelimit_conformance::sets::differential::run_against_reference;
use ratelimit_conformance::sets::invariants::check_set_invariants;
use ratelimit_conformance::sets::scenarios;
use ratelimit_conformance::sets::strategy::{set_case, SetSequenceOptions};
use ratelimit_conformance::sets::{RunOptions, SetOp};
use ratelimit_conformance::strategy::{awkward_keys, small_policy};
use ratelimit_core::{
    Concurrency, Error, Limit, ManualClock, Mark, NamedLimit, Policy, PolicySet, Receipt,
    ReferenceSetLimiter, SetDecision, SetLimiter,
};
use ratelimit_redis::{RedisSetLimiter, Target};
use ratelimit_redis_harness::{RedisCluster, RedisServer};

use support::{options, runtime};

const START: u64 = 1_700_000_000_000_000;

/// A set of one to four policies: rate policies with small limits, each
/// settling or not, and concurrency policies.
fn any_set() -> impl Strategy<Value = PolicySet> {
    let limit = prop_oneof![
        3 => (small_policy(), any::<bool>()).prop_map(|(p, s)| (Limit::Rate(p), s)),
        1 => (1u64..=3, 1u64..=3_000).prop_map(|(n, ms)| {
            let c = Concurrency::new(n, Duration::from_millis(ms)).expect("a valid policy");
            (Limit::Concurrency(c), false)
        }),
    ];
    proptest::collection::vec(limit, 1..=4).prop_map(|limits| {
        let named = limits
            .into_iter()
            .enumerate()
            .map(|(i, (limit, settles))| {
                let named = NamedLimit::new(&format!("p{i}.x-_"), limit).expect("a valid name");
                if settles {
                    named.settling()
                } else {
                    named
                }
            })
            .collect();
        PolicySet::new(named).expect("a valid set")
    })
}

/// One step of a differential sequence. Indices and amounts are reduced
/// to the set and the open receipts when applied.
#[derive(Debug, Clone)]
enum Step {
    /// A check of one of the keys; per policy a cost (0 gates), reduced
    /// modulo limit + 1, or (rarely) one more than the first policy's
    /// limit.
    Check(usize, Vec<u64>, bool),
    /// A settle of an open receipt; per policy an amount, or what was
    /// taken; a policy not declared to settle (rarely) gets an amount
    /// other than what was taken.
    Settle(usize, Vec<Option<u64>>, bool),
    Renew(usize),
    /// A receipt dropped without settling (a `Reservation` dropped).
    Drop(usize),
    /// The clock moves forward by this many µs.
    Forward(u64),
    /// The clock goes back by this many µs.
    Back(u64),
}

fn step() -> impl Strategy<Value = Step> {
    let amounts = proptest::collection::vec(0u64..1_000, 4);
    prop_oneof![
        6 => (0usize..3, amounts, proptest::bool::weighted(0.05))
            .prop_map(|(k, c, over)| Step::Check(k, c, over)),
        4 => (
            any::<usize>(),
            proptest::collection::vec(proptest::option::weighted(0.7, 0u64..20), 4),
            proptest::bool::weighted(0.05),
        )
            .prop_map(|(r, a, wrong)| Step::Settle(r, a, wrong)),
        1 => any::<usize>().prop_map(Step::Renew),
        1 => any::<usize>().prop_map(Step::Drop),
        2 => prop_oneof![0u64..2_000_000, 0u64..10_000].prop_map(Step::Forward),
        1 => (0u64..1_500_000).prop_map(Step::Back),
    ]
}

/// The receipt parts as comparable values: lease ids differ between the
/// two limiters (the reference counts, Redis draws), everything else must
/// not.
fn marks(receipt: &Receipt) -> Vec<(u64, Mark)> {
    receipt
        .parts()
        .iter()
        .map(|p| {
            let mark = match p.mark {
                Mark::Lease(Some(mut lease)) => {
                    lease.id = ratelimit_core::LeaseId::new(0);
                    Mark::Lease(Some(lease))
                }
                other => other,
            };
            (p.taken, mark)
        })
        .collect()
}

/// An error as comparable values.
fn error(e: &Error) -> (String, Option<String>) {
    let kind = format!("{:?}", e.kind());
    if kind != "Invalid" && kind != "CostExceedsLimit" {
        return (format!("{kind}: {}", e.chain()), None);
    }
    (kind, e.policy().map(str::to_owned))
}

fn same<T: PartialEq + std::fmt::Debug>(
    redis: T,
    reference: T,
    what: &str,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(redis, reference, "{}", what);
    Ok(())
}

fn same_result(
    redis: &Result<SetDecision, Error>,
    reference: &Result<SetDecision, Error>,
    what: &str,
) -> Result<(), TestCaseError> {
    match (redis, reference) {
        (Ok(a), Ok(b)) => same(a, b, what),
        (Err(a), Err(b)) => same(error(a), error(b), what),
        _ => Err(TestCaseError::fail(format!(
            "{what}: redis {redis:?}, reference {reference:?}"
        ))),
    }
}

/// Waits until Redis has applied the releases sent without waiting: the
/// two limiters peek alike on every key. (A release that never arrives
/// leaves them apart, and the next comparison fails.)
async fn drained(redis: &RedisSetLimiter, reference: &ReferenceSetLimiter, keys: &[Vec<u8>]) {
    for _ in 0..400 {
        let mut all = true;
        for key in keys {
            let a = redis.peek_set(key).await.expect("a peek");
            all &= a == reference.peek_set_sync(key);
        }
        if all {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `steps` on both limiters and compares every answer.
async fn run_differential(
    target: &Target,
    set: PolicySet,
    steps: Vec<Step>,
) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(START);
    let redis = RedisSetLimiter::connect(set.clone(), options(target, &clock, "sets"))
        .await
        .expect("connect");
    let reference = ReferenceSetLimiter::with_clock(set.clone(), clock.clone());
    let all_keys = awkward_keys();
    let keys: Vec<Vec<u8>> = all_keys.into_iter().take(2).collect();
    let mut open: Vec<(Receipt, Receipt)> = Vec::new();
    for (n, step) in steps.into_iter().enumerate() {
        let what = format!("step {n}: {step:?}");
        match step {
            Step::Check(k, costs, over) => {
                let key = &keys[k % keys.len()];
                let mut costs: Vec<u64> = set
                    .limits()
                    .iter()
                    .zip(costs)
                    .map(|(l, c)| match l.limit() {
                        Limit::Concurrency(_) => c % 2,
                        Limit::Rate(p) => c % (p.limit() + 1),
                    })
                    .collect();
                if over {
                    costs[0] = set.limits()[0].limit().limit() + 1;
                }
                let a = redis.check_set(key, &costs).await;
                let b = reference.check_set_sync(key, &costs);
                match (a, b) {
                    (Ok(a), Ok(b)) => {
                        same(&a.decision, &b.decision, &what)?;
                        same(
                            a.receipt.as_ref().map(marks),
                            b.receipt.as_ref().map(marks),
                            &what,
                        )?;
                        if let (Some(ra), Some(rb)) = (a.receipt, b.receipt) {
                            open.push((ra, rb));
                        }
                    }
                    (Err(a), Err(b)) => same(error(&a), error(&b), &what)?,
                    (a, b) => return Err(TestCaseError::fail(format!("{what}: {a:?} vs {b:?}"))),
                }
            }
            Step::Settle(r, actual, wrong) if !open.is_empty() => {
                let (ra, rb) = open.swap_remove(r % open.len());
                let actual: Vec<u64> = rb
                    .parts()
                    .iter()
                    .zip(set.limits())
                    .zip(actual)
                    .map(|((p, l), a)| match a {
                        Some(a) if l.settles() || wrong => a,
                        _ => p.taken,
                    })
                    .collect();
                let a = redis.settle(ra, &actual).await;
                let b = reference.settle_sync(rb, &actual);
                same_result(&a, &b, &what)?;
            }
            Step::Renew(r) if !open.is_empty() => {
                let i = r % open.len();
                let (ra, rb) = &mut open[i];
                let a = redis.renew(ra).await.expect("a renew");
                let b = reference.renew_sync(rb);
                same(a, b, &what)?;
                same(marks(ra), marks(rb), &what)?;
            }
            Step::Drop(r) if !open.is_empty() => {
                let (ra, rb) = open.swap_remove(r % open.len());
                redis.release(ra);
                reference.release(rb);
                drained(&redis, &reference, &keys).await;
            }
            Step::Forward(us) => clock.advance_micros(us),
            Step::Back(us) => clock.rewind(Duration::from_micros(us)),
            _ => {}
        }
        for key in &keys {
            let a = redis.peek_set(key).await.expect("a peek");
            same(
                a,
                reference.peek_set_sync(key),
                &format!("{what}, then a peek"),
            )?;
        }
    }
    Ok(())
}

fn differential(target: &Target, cases: u32, file: &'static str) {
    let rt = runtime();
    let mut runner = TestRunner::new(ProptestConfig {
        // PROPTEST_CASES, when set, for longer runs.
        cases: ratelimit_conformance::strategy::cases(cases).cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(file),
        )),
        ..ProptestConfig::default()
    });
    let strategy = (any_set(), proptest::collection::vec(step(), 1..60));
    runner
        .run(&strategy, |(set, steps)| {
            rt.block_on(run_differential(target, set, steps))
        })
        .unwrap();
}

#[test]
fn differential_matches_the_reference_standalone() {
    let server = RedisServer::start();
    differential(
        &Target::Standalone(server.url()),
        512,
        "tests/sets.proptest-regressions",
    );
}

#[test]
fn differential_matches_the_reference_on_a_cluster() {
    let cluster = RedisCluster::start();
    differential(
        &Target::Cluster(cluster.urls()),
        32,
        "tests/sets-cluster.proptest-regressions",
    );
}

/// A refund after another receipt's refund returns only what is still
/// counted from it (`end = tat_r - (rf - rf_r)`), on both limiters.
#[test]
fn a_bucket_refund_after_another_counts_the_ledger() {
    let server = RedisServer::start();
    let target = Target::Standalone(server.url());
    let bucket = Policy::token_bucket(6, 1, Duration::from_secs(1)).expect("a valid policy");
    let set = PolicySet::new(vec![NamedLimit::new("tokens", bucket)
        .expect("a valid name")
        .settling()])
    .expect("a valid set");
    let steps = vec![
        Step::Check(0, vec![3], false),
        Step::Check(0, vec![2], false),
        Step::Settle(1, vec![Some(0)], false),
        Step::Settle(0, vec![Some(0)], false),
    ];
    runtime()
        .block_on(run_differential(&target, set, steps))
        .expect("the same answers");
}

// The conformance suite's policy-set runners, on a server and on a
// cluster: random sets and sequences against `ReferenceSetLimiter`, the
// invariants of SPEC.md section 5, and the hand-written scenarios. A
// dropped receipt is settled with what it took (`RunOptions::remote`): a
// release is sent without waiting.

/// Whether a sequence keeps the clock inside the exact domain (below
/// `MAX_TIMESTAMP_US`, where Lua's doubles and the Rust integers agree).
fn in_domain(start: u64, ops: &[SetOp]) -> bool {
    let mut now = start;
    ops.iter().all(|op| {
        if let SetOp::Advance { us } = op {
            now = now.saturating_add_signed(*us);
        }
        now < ratelimit_core::MAX_TIMESTAMP_US
    })
}

/// Runs `cases` random cases of `options` on `target`: the differential
/// runner, then (on a fresh limiter) the invariants.
fn conformance(target: &Target, cases: u32, options: SetSequenceOptions, functions: bool) {
    let rt = runtime();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: ratelimit_conformance::strategy::cases(cases).cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = set_case(options)
        .prop_filter("the clock leaves the exact domain", |(_, start, ops)| {
            in_domain(*start, ops)
        });
    runner
        .run(&strategy, |(set, start, ops)| {
            rt.block_on(async {
                let clock = ManualClock::new(start);
                let keys: Vec<Vec<u8>> = awkward_keys().into_iter().take(options.keys).collect();
                let limiter = RedisSetLimiter::connect(
                    set.clone(),
                    conformance_options(target, &clock).with_functions(functions),
                )
                .await
                .expect("connect");
                run_against_reference(&limiter, &clock, &keys, start, &ops, RunOptions::remote())
                    .await
                    .map_err(|v| TestCaseError::fail(format!("differential: {v}")))?;
                let limiter = RedisSetLimiter::connect(
                    set,
                    conformance_options(target, &clock).with_functions(functions),
                )
                .await
                .expect("connect");
                let invariant_ops: Vec<SetOp> = ops
                    .into_iter()
                    .filter(|op| !matches!(op, SetOp::Reset { .. }))
                    .collect();
                check_set_invariants(
                    &limiter,
                    &clock,
                    start,
                    &invariant_ops,
                    RunOptions::remote(),
                )
                .await
                .map_err(|v| TestCaseError::fail(format!("invariants: {v}")))
            })
        })
        .unwrap();
}

fn conformance_options(target: &Target, clock: &ManualClock) -> ratelimit_redis::RedisOptions {
    options(target, clock, "conf")
}

fn scenarios_on(target: &Target, functions: bool) {
    let target = target.clone();
    runtime().block_on(async move {
        scenarios::run_all(
            |set, clock| {
                let target = target.clone();
                async move {
                    Arc::new(
                        RedisSetLimiter::connect(
                            set,
                            conformance_options(&target, &clock).with_functions(functions),
                        )
                        .await
                        .expect("connect"),
                    ) as Arc<dyn SetLimiter>
                }
            },
            RunOptions::remote(),
        )
        .await
        .unwrap_or_else(|v| panic!("{v}"));
    });
}

#[test]
fn the_conformance_suite_passes_standalone() {
    let server = RedisServer::start();
    let target = Target::Standalone(server.url());
    scenarios_on(&target, true);
    conformance(
        &target,
        192,
        SetSequenceOptions::default().with_resets(true).with_keys(3),
        true,
    );
}

/// The same suite on the script path (`EVALSHA`), which a server without
/// Redis functions takes.
#[test]
fn the_conformance_suite_passes_as_a_script() {
    let server = RedisServer::start();
    let target = Target::Standalone(server.url());
    scenarios_on(&target, false);
    conformance(
        &target,
        48,
        SetSequenceOptions::default().with_resets(true).with_keys(3),
        false,
    );
}

#[test]
fn the_conformance_suite_passes_on_a_cluster() {
    let cluster = RedisCluster::start();
    let target = Target::Cluster(cluster.urls());
    scenarios_on(&target, true);
    conformance(
        &target,
        32,
        SetSequenceOptions::default().with_resets(true).with_keys(3),
        true,
    );
}
