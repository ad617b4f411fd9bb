//! Proptest strategies: policies, awkward keys and operation sequences.

use std::time::Duration;

use proptest::prelude::*;
use ratelimit_core::{AlgorithmName, Policy};

use crate::ops::{Op, Step};

/// A timestamp in the range real clocks show (2023 to 2030), in µs.
pub fn realistic_start() -> impl Strategy<Value = u64> {
    1_672_531_200_000_000u64..1_893_456_000_000_000
}

/// A start time: mostly realistic, sometimes at or near the epoch (where
/// window index 0 and saturating subtraction are exercised).
pub fn start_time() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => realistic_start(),
        1 => 0u64..5_000_000,
    ]
}

/// A window or period in whole milliseconds: tiny, round and odd sizes.
pub fn period() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::from_millis(1)),
        Just(Duration::from_millis(7)),
        Just(Duration::from_secs(1)),
        Just(Duration::from_secs(30)),
        Just(Duration::from_secs(3600)),
        (1u64..=120_000).prop_map(Duration::from_millis),
    ]
}

/// A limit: mostly small (so sequences hit denials), sometimes large.
pub fn limit() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 1u64..=12,
        1 => 13u64..=1_000,
        1 => Just(u64::from(u32::MAX)),
    ]
}

/// A valid policy of the given algorithm.
pub fn policy_of(algorithm: AlgorithmName) -> BoxedStrategy<Policy> {
    let valid = |p: Result<Policy, _>| p.ok();
    match algorithm {
        AlgorithmName::FixedWindow => (limit(), period())
            .prop_filter_map("outside the exact domain", move |(l, w)| {
                valid(Policy::fixed_window(l, w))
            })
            .boxed(),
        AlgorithmName::SlidingWindow => (limit(), period())
            .prop_filter_map("outside the exact domain", move |(l, w)| {
                valid(Policy::sliding_window(l, w))
            })
            .boxed(),
        _ => (limit(), 1u64..=20, period())
            .prop_filter_map("outside the exact domain", move |(b, r, p)| {
                valid(Policy::token_bucket(b, r, p))
            })
            .boxed(),
    }
}

/// A valid policy of any algorithm.
pub fn any_policy() -> BoxedStrategy<Policy> {
    prop_oneof![
        policy_of(AlgorithmName::FixedWindow),
        policy_of(AlgorithmName::SlidingWindow),
        policy_of(AlgorithmName::TokenBucket),
    ]
    .boxed()
}

/// What a sequence may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SequenceOptions {
    /// Number of distinct keys the steps address.
    pub keys: usize,
    /// Most steps in one sequence.
    pub max_len: usize,
    /// Whether the clock sometimes goes back (up to three hours).
    pub backwards: bool,
    /// Whether `reset` operations appear.
    pub resets: bool,
}

impl Default for SequenceOptions {
    fn default() -> Self {
        Self {
            keys: 3,
            max_len: 60,
            backwards: true,
            resets: true,
        }
    }
}

impl SequenceOptions {
    /// Forward-only sequences with no resets, for the throughput bounds.
    #[must_use]
    pub fn forward() -> Self {
        Self {
            backwards: false,
            resets: false,
            ..Self::default()
        }
    }

    /// The same options with `keys` distinct keys.
    #[must_use]
    pub fn with_keys(self, keys: usize) -> Self {
        Self { keys, ..self }
    }

    /// The same options with at most `max_len` steps.
    #[must_use]
    pub fn with_max_len(self, max_len: usize) -> Self {
        Self { max_len, ..self }
    }
}

/// A clock step for `policy`: often none, often within a window or a few
/// windows, sometimes many windows, and (if enabled) sometimes hours back.
pub fn advance(policy: &Policy, backwards: bool) -> BoxedStrategy<i64> {
    // A token bucket's window is its fill time, up to 2^51 µs; 50 of those
    // would leave the exact domain (timestamps below 2^52 µs) at once, so
    // steps scale with the window up to about 12.7 days.
    let w = i64::try_from(policy.window().as_micros())
        .unwrap_or(i64::MAX)
        .clamp(1, 1 << 40);
    let forward = prop_oneof![
        3 => Just(0i64),
        2 => 1i64..1_000,
        3 => 1i64..=w,
        1 => w..=w.saturating_mul(5),
        1 => 0i64..=w.saturating_mul(50),
    ];
    if backwards {
        prop_oneof![
            12 => forward,
            1 => -3 * 3_600_000_000i64..0,
        ]
        .boxed()
    } else {
        forward.boxed()
    }
}

/// An operation: mostly checks of valid costs, some peeks, some costs out
/// of range, and (if enabled) some resets.
pub fn op(limit: u64, resets: bool) -> BoxedStrategy<Op> {
    let check = prop_oneof![
        8 => Just(1u64),
        8 => 1..=limit,
        1 => Just(limit),
        1 => limit.saturating_add(1)..=limit.saturating_add(3),
        1 => Just(0u64),
    ]
    .prop_map(|cost| Op::Check { cost });
    if resets {
        prop_oneof![14 => check, 4 => Just(Op::Peek), 1 => Just(Op::Reset)].boxed()
    } else {
        prop_oneof![14 => check, 4 => Just(Op::Peek)].boxed()
    }
}

/// A sequence of steps for `policy`.
pub fn steps(policy: &Policy, options: SequenceOptions) -> BoxedStrategy<Vec<Step>> {
    let step = (
        advance(policy, options.backwards),
        0..options.keys.max(1),
        op(policy.limit(), options.resets),
    )
        .prop_map(|(advance_us, key, op)| Step {
            advance_us,
            key,
            op,
        });
    proptest::collection::vec(step, 1..=options.max_len.max(1)).boxed()
}

/// A policy of `algorithm`, a start time and a sequence for it.
pub fn scenario(
    algorithm: AlgorithmName,
    options: SequenceOptions,
) -> BoxedStrategy<(Policy, u64, Vec<Step>)> {
    policy_of(algorithm)
        .prop_flat_map(move |policy| (Just(policy), start_time(), steps(&policy, options)))
        .boxed()
}

/// Keys that break naive stores: empty, binary, NUL, cluster hash-tag
/// braces, separators, glob characters, newlines, 64 KiB, and pairs that
/// differ only in their last byte or by a prefix.
#[must_use]
pub fn awkward_keys() -> Vec<Vec<u8>> {
    let big = vec![b'k'; 64 * 1024];
    let mut big_other = big.clone();
    big_other[64 * 1024 - 1] = b'j';
    vec![
        b"".to_vec(),
        b"\0".to_vec(),
        b"\0\0".to_vec(),
        b"{".to_vec(),
        b"}".to_vec(),
        b"{}".to_vec(),
        b"{user}".to_vec(),
        b"{user}:1".to_vec(),
        b"user:1".to_vec(),
        b"user:1:".to_vec(),
        b"*".to_vec(),
        b"user:*".to_vec(),
        b"a\nb".to_vec(),
        b"a\r\nb".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x80],
        "ключ🔑".as_bytes().to_vec(),
        big,
        big_other,
    ]
}
