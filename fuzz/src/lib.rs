//! What the fuzz targets share: turning fuzzer bytes into a valid policy
//! and an operation sequence, and the checks they run.

pub mod forwarded;
pub mod sets;

use arbitrary::Arbitrary;
use ratelimit_conformance::invariants::{check_sequence, Invariant};
use ratelimit_conformance::ops::{Op, Step};
use ratelimit_core::{
    Algorithm, AlgorithmName, FixedWindowState, Policy, PolicyState, SlidingWindowState,
    TokenBucketState, MAX_PERIOD_MS, MAX_TIMESTAMP_US,
};

/// One fuzzer-chosen operation, mapped into the policy's range by [`run`].
#[derive(Debug, Arbitrary)]
pub struct RawStep {
    advance: i64,
    key: u8,
    op: u8,
    cost: u64,
}

/// A fuzzer-chosen policy, sequence, and one arbitrary raw state.
#[derive(Debug, Arbitrary)]
pub struct Input {
    /// The algorithm, for [`run_any`]: an index into `AlgorithmName::ALL`.
    algorithm: u8,
    limit: u64,
    window_ms: u64,
    refill: u32,
    start: u64,
    steps: Vec<RawStep>,
    raw_state: (u64, u32, u32),
    raw_now: u64,
    raw_cost: u64,
}

fn policy(algorithm: AlgorithmName, input: &Input) -> Option<Policy> {
    // Mostly small limits, so sequences reach denials; any valid limit can occur.
    let limit = if input.limit % 4 == 0 {
        input.limit
    } else {
        1 + input.limit % 16
    };
    let window = std::time::Duration::from_millis(1 + input.window_ms % MAX_PERIOD_MS);
    // No wildcard arms here or below: a new algorithm fails to compile
    // until the fuzzer can build its policy and an arbitrary state of it.
    match algorithm {
        AlgorithmName::FixedWindow => Policy::fixed_window(limit, window).ok(),
        AlgorithmName::SlidingWindow => Policy::sliding_window(limit, window).ok(),
        AlgorithmName::TokenBucket => {
            Policy::token_bucket(limit, u64::from(input.refill.max(1)), window).ok()
        }
    }
}

/// A state of `policy`'s algorithm made of arbitrary fields.
fn raw_state(policy: &Policy, (a, b, c): (u64, u32, u32)) -> PolicyState {
    match policy {
        Policy::FixedWindow(_) => PolicyState::FixedWindow(FixedWindowState::new(a, b)),
        Policy::SlidingWindow(_) => PolicyState::SlidingWindow(SlidingWindowState::new(a, b, c)),
        Policy::TokenBucket(_) => PolicyState::TokenBucket(TokenBucketState::new(a)),
    }
}

/// [`run`] on the algorithm the input picks from `AlgorithmName::ALL`, so
/// that a new algorithm is fuzzed with no new target.
pub fn run_any(input: &Input) {
    let all = AlgorithmName::ALL;
    run(all[usize::from(input.algorithm) % all.len()], input);
}

/// Runs the fuzzer's sequence on `algorithm` and panics on any broken
/// invariant; then feeds an arbitrary raw state, time and cost to every
/// function, which must not panic.
pub fn run(algorithm: AlgorithmName, input: &Input) {
    let Some(policy) = policy(algorithm, input) else {
        return;
    };
    let window = i64::try_from(policy.window().as_micros())
        .unwrap_or(i64::MAX)
        .max(1);
    let limit = policy.limit();
    let steps: Vec<Step> = input
        .steps
        .iter()
        .take(200)
        .map(|raw| {
            // Forward by up to 50 windows, or back by up to three hours.
            let advance_us = if raw.advance >= 0 {
                raw.advance % window.saturating_mul(50)
            } else {
                -((raw.advance.unsigned_abs() % 10_800_000_000) as i64)
            };
            let op = match raw.op % 8 {
                0 => Op::Peek,
                1 => Op::Reset,
                _ => Op::Check {
                    cost: raw.cost % limit.saturating_add(3),
                },
            };
            Step {
                advance_us,
                key: usize::from(raw.key % 4),
                op,
            }
        })
        .collect();
    // Keep the whole run inside the exact domain: start + 200 * 50 windows.
    let start = input.start % (MAX_TIMESTAMP_US / 2);
    if let Err(violation) = check_sequence(&policy, start, &steps, &Invariant::ALL) {
        panic!("{violation}\npolicy: {policy:?}\nstart: {start}\nsteps: {steps:?}");
    }

    let state = raw_state(&policy, input.raw_state);
    let _ = policy.check(&state, input.raw_now, input.raw_cost);
    let _ = policy.peek(&state, input.raw_now);
    let _ = policy.expires_at(&state);
}

/// Parses `text` as every configuration form; whatever parses must
/// serialize and parse back to the same policy, and nothing may panic.
pub fn config(text: &str) {
    let _ = ratelimit_core::parse_duration(text);
    let _ = ratelimit_core::parse_rate(text);
    for policy in [
        toml::from_str::<Policy>(text).ok(),
        serde_json::from_str::<Policy>(text).ok(),
    ]
    .into_iter()
    .flatten()
    {
        let as_toml = toml::to_string(&policy).expect("a policy serializes to TOML");
        let back: Policy = toml::from_str(&as_toml)
            .unwrap_or_else(|e| panic!("{policy:?} wrote {as_toml:?}, which does not parse: {e}"));
        assert_eq!(back, policy, "TOML round trip of {as_toml:?}");
        let as_json = serde_json::to_string(&policy).expect("a policy serializes to JSON");
        let back: Policy = serde_json::from_str(&as_json)
            .unwrap_or_else(|e| panic!("{policy:?} wrote {as_json:?}, which does not parse: {e}"));
        assert_eq!(back, policy, "JSON round trip of {as_json:?}");
    }
}
