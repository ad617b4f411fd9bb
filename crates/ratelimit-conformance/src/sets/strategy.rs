//! Proptest strategies for policy sets and their operation sequences.

use std::time::Duration;

use proptest::prelude::*;
use ratelimit_core::{Concurrency, Limit, NamedLimit, PolicySet};

use super::SetOp;
use crate::strategy::{small_policy, start_time};

/// A concurrency policy with a small limit (1 to 3 leases) and a lease TTL
/// of 1 ms to 3 s, so sequences meet full slots and expiring leases.
pub fn small_concurrency() -> BoxedStrategy<Concurrency> {
    (1u64..=3, 1u64..=3_000)
        .prop_map(|(n, ttl)| {
            Concurrency::new(n, Duration::from_millis(ttl))
                .expect("a small limit and TTL are valid")
        })
        .boxed()
}

/// A set of one to four rate policies of
/// [`small_policy`], each declared to settle
/// or not at random, and half the time a concurrency policy (named
/// `streams`) at a random position. Rate policies are named `p0`, `p1`, …
///
/// # Examples
///
/// ```
/// use proptest::strategy::{Strategy, ValueTree};
/// use proptest::test_runner::TestRunner;
/// use ratelimit_conformance::sets::strategy::policy_set;
///
/// let mut runner = TestRunner::deterministic();
/// let set = policy_set().new_tree(&mut runner).unwrap().current();
/// assert!((1..=5).contains(&set.len()));
/// ```
pub fn policy_set() -> BoxedStrategy<PolicySet> {
    let rates = proptest::collection::vec((small_policy(), any::<bool>()), 1..=4);
    let streams = proptest::option::of((small_concurrency(), 0usize..=4));
    (rates, streams)
        .prop_map(|(rates, streams)| {
            let mut limits: Vec<NamedLimit> = rates
                .into_iter()
                .enumerate()
                .map(|(i, (policy, settles))| {
                    let named = NamedLimit::new(&format!("p{i}"), policy).expect("a valid name");
                    if settles {
                        named.settling()
                    } else {
                        named
                    }
                })
                .collect();
            if let Some((c, at)) = streams {
                let named = NamedLimit::new("streams", c).expect("a valid name");
                limits.insert(at.min(limits.len()), named);
            }
            PolicySet::new(limits).expect("unique names, at most five policies")
        })
        .boxed()
}

/// What a set sequence may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SetSequenceOptions {
    /// Number of distinct keys the operations address.
    pub keys: usize,
    /// Most operations in one sequence.
    pub max_len: usize,
    /// Whether the clock sometimes goes back.
    pub backwards: bool,
    /// Whether `reset_set` operations appear. The counterfactual of S1 and
    /// S2 is not defined across a reset, so the invariant runs leave them
    /// out; the differential runs include them.
    pub resets: bool,
    /// Whether a settle sometimes sends an amount other than what was taken
    /// to a policy not declared to settle (an `Invalid` error that still
    /// releases the receipt's leases).
    pub mismatched_actuals: bool,
    /// Whether costs out of range appear (errors that change nothing).
    pub invalid_costs: bool,
}

impl Default for SetSequenceOptions {
    fn default() -> Self {
        Self {
            keys: 2,
            max_len: 30,
            backwards: true,
            resets: false,
            mismatched_actuals: true,
            invalid_costs: true,
        }
    }
}

impl SetSequenceOptions {
    /// The same options with `keys` distinct keys.
    #[must_use]
    pub fn with_keys(self, keys: usize) -> Self {
        Self { keys, ..self }
    }

    /// The same options with at most `max_len` operations.
    #[must_use]
    pub fn with_max_len(self, max_len: usize) -> Self {
        Self { max_len, ..self }
    }

    /// The same options with the clock moving forward only (or not).
    #[must_use]
    pub fn with_backwards(self, backwards: bool) -> Self {
        Self { backwards, ..self }
    }

    /// The same options with (or without) the calls that must fail:
    /// costs out of range and wrong amounts settled on policies not
    /// declared to settle.
    #[must_use]
    pub fn with_errors(self, errors: bool) -> Self {
        Self {
            mismatched_actuals: errors,
            invalid_costs: errors,
            ..self
        }
    }

    /// The same options with resets (or without).
    #[must_use]
    pub fn with_resets(self, resets: bool) -> Self {
        Self { resets, ..self }
    }
}

/// The shortest and the longest period of `set`: rate windows (a bucket's
/// fill time) and lease TTLs, in µs.
fn periods(set: &PolicySet) -> (i64, i64) {
    let us = |d: Duration| {
        i64::try_from(d.as_micros())
            .unwrap_or(i64::MAX)
            .clamp(1, 1 << 40)
    };
    let all: Vec<i64> = set
        .limits()
        .iter()
        .map(|l| match l.limit() {
            Limit::Rate(p) => us(p.window()),
            Limit::Concurrency(c) => us(c.lease_ttl()),
        })
        .collect();
    (
        all.iter().copied().min().unwrap_or(1),
        all.iter().copied().max().unwrap_or(1),
    )
}

/// A clock step for `set`: often none or tiny, often within the shortest
/// period, sometimes several of the longest, and (if enabled) sometimes
/// back by up to two of the longest.
pub fn set_advance(set: &PolicySet, backwards: bool) -> BoxedStrategy<i64> {
    let (short, long) = periods(set);
    let forward = prop_oneof![
        2 => Just(0i64),
        3 => 1i64..1_000,
        3 => 1i64..=short,
        2 => 1i64..=long,
        1 => long..=long.saturating_mul(3),
    ];
    if backwards {
        prop_oneof![10 => forward, 1 => -long.saturating_mul(2)..0].boxed()
    } else {
        forward.boxed()
    }
}

/// One cost per policy of `set`: gates (0), small and whole-limit costs,
/// a concurrency policy's 0 or 1, and (if enabled) now and then a cost out
/// of range.
pub fn set_costs(set: &PolicySet, invalid: bool) -> BoxedStrategy<Vec<u64>> {
    let per: Vec<BoxedStrategy<u64>> = set
        .limits()
        .iter()
        .map(|l| {
            let bad = u32::from(invalid);
            match l.limit() {
                Limit::Rate(p) => {
                    let limit = p.limit();
                    prop_oneof![
                        3 => Just(0u64),
                        8 => 1..=limit,
                        3 => Just(1u64),
                        2 => Just(limit),
                        bad => Just(limit + 1),
                    ]
                    .boxed()
                }
                Limit::Concurrency(_) => {
                    prop_oneof![6 => Just(1u64), 3 => Just(0u64), bad => Just(2u64)].boxed()
                }
            }
        })
        .collect();
    per.boxed()
}

/// The actual amounts of a settle: for a policy declared to settle, what
/// was taken or any amount up to twice its limit plus one; `None` (what
/// was taken) for the others, but (if enabled) now and then a wrong one.
pub fn set_actuals(set: &PolicySet, mismatched: bool) -> BoxedStrategy<Vec<Option<u64>>> {
    let per: Vec<BoxedStrategy<Option<u64>>> = set
        .limits()
        .iter()
        .map(|l| match l.limit() {
            Limit::Rate(p) if l.settles() => {
                prop_oneof![2 => Just(None), 4 => (0..=2 * p.limit() + 1).prop_map(Some)].boxed()
            }
            Limit::Rate(p) => {
                let bad = u32::from(mismatched);
                prop_oneof![30 => Just(None), bad => (0..=p.limit()).prop_map(Some)].boxed()
            }
            Limit::Concurrency(_) => Just(None).boxed(),
        })
        .collect();
    per.boxed()
}

/// A sequence of operations on `set`.
pub fn set_ops(set: &PolicySet, options: SetSequenceOptions) -> BoxedStrategy<Vec<SetOp>> {
    let keys = options.keys.max(1);
    let check = (0..keys, set_costs(set, options.invalid_costs))
        .prop_map(|(key, costs)| SetOp::Check { key, costs });
    let settle = (any::<usize>(), set_actuals(set, options.mismatched_actuals))
        .prop_map(|(pick, actual)| SetOp::Settle { pick, actual });
    let reset_weight = u32::from(options.resets);
    let op = prop_oneof![
        8 => check,
        4 => settle,
        1 => any::<usize>().prop_map(|pick| SetOp::Renew { pick }),
        1 => any::<usize>().prop_map(|pick| SetOp::Drop { pick }),
        1 => (0..keys).prop_map(|key| SetOp::Peek { key }),
        reset_weight => (0..keys).prop_map(|key| SetOp::Reset { key }),
        5 => set_advance(set, options.backwards).prop_map(|us| SetOp::Advance { us }),
    ];
    proptest::collection::vec(op, 1..=options.max_len.max(1)).boxed()
}

/// A set, a start time and a sequence for it.
pub fn set_case(options: SetSequenceOptions) -> BoxedStrategy<(PolicySet, u64, Vec<SetOp>)> {
    policy_set()
        .prop_flat_map(move |set| {
            let ops = set_ops(&set, options);
            (Just(set), start_time(), ops)
        })
        .boxed()
}
