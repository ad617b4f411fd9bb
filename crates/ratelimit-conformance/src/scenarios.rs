//! Scenarios with known answers, for any [`Limiter`].
//!
//! Each scenario builds fresh limiters through the caller's `make`
//! function, with a [`ManualClock`] it controls, and returns the first
//! [`Violation`] it sees. [`run_all`] runs every scenario on one policy of
//! each algorithm.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{AlgorithmName, Decision, ErrorKind, Limiter, ManualClock, Policy};

use crate::strategy::awkward_keys;
use crate::{ensure, Violation};

/// An instant on a 30-second boundary (2023-11-14T22:13:30Z), in µs.
pub const ALIGNED: u64 = 1_700_000_010_000_000;

/// The sample policy of `algorithm` that [`run_all`] and the known-answer
/// vectors use: a fixed window of 5 per 30 s, a sliding window of 10 per
/// 10 s, a token bucket of 4 refilled at 1 per 500 ms.
///
/// # Examples
///
/// ```
/// use ratelimit_conformance::scenarios::sample_policy;
/// use ratelimit_core::AlgorithmName;
///
/// assert_eq!(sample_policy(AlgorithmName::FixedWindow).limit(), 5);
/// ```
#[must_use]
pub fn sample_policy(algorithm: AlgorithmName) -> Policy {
    // These literals are inside the exact domain, so construction cannot fail.
    match algorithm {
        AlgorithmName::FixedWindow => Policy::fixed_window(5, Duration::from_secs(30)),
        AlgorithmName::SlidingWindow => Policy::sliding_window(10, Duration::from_secs(10)),
        AlgorithmName::TokenBucket => Policy::token_bucket(4, 1, Duration::from_millis(500)),
    }
    .expect("valid literal policy")
}

/// [`sample_policy`] of every algorithm of [`AlgorithmName::ALL`], in order.
///
/// # Examples
///
/// ```
/// use ratelimit_conformance::scenarios::sample_policies;
/// use ratelimit_core::AlgorithmName;
///
/// let algorithms = sample_policies().map(|p| p.algorithm());
/// assert_eq!(algorithms, AlgorithmName::ALL);
/// ```
#[must_use]
pub fn sample_policies() -> [Policy; AlgorithmName::ALL.len()] {
    AlgorithmName::ALL.map(sample_policy)
}

/// Runs every scenario on every sample policy.
///
/// `make(policy, clock)` must return a fresh limiter (no key holds state)
/// that applies `policy` with time from `clock`.
///
/// # Errors
///
/// The first violation, prefixed with the scenario and policy.
pub async fn run_all<F, Fut>(make: F) -> Result<(), Violation>
where
    F: Fn(Policy, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn Limiter>>,
{
    for algorithm in AlgorithmName::ALL {
        // No wildcard arm: every algorithm has its known-answer vectors.
        let (name, vectors) = match algorithm {
            AlgorithmName::FixedWindow => (
                "upstash_generate_route",
                upstash_generate_route(&make).await,
            ),
            AlgorithmName::SlidingWindow => (
                "sliding_window_vectors",
                sliding_window_vectors(&make).await,
            ),
            AlgorithmName::TokenBucket => {
                ("token_bucket_vectors", token_bucket_vectors(&make).await)
            }
        };
        vectors.map_err(|v| v.context(name))?;
    }
    for policy in sample_policies() {
        let name = policy.algorithm_name();
        liveness_and_retry(&make, policy)
            .await
            .map_err(|v| v.context(format!("liveness_and_retry[{name}]")))?;
        remaining_is_exact(&make, policy)
            .await
            .map_err(|v| v.context(format!("remaining_is_exact[{name}]")))?;
        reset_after_is_exact(&make, policy)
            .await
            .map_err(|v| v.context(format!("reset_after_is_exact[{name}]")))?;
        denials_are_free(&make, policy)
            .await
            .map_err(|v| v.context(format!("denials_are_free[{name}]")))?;
        cost_out_of_range(&make, policy)
            .await
            .map_err(|v| v.context(format!("cost_out_of_range[{name}]")))?;
        reset_forgets_one_key(&make, policy)
            .await
            .map_err(|v| v.context(format!("reset_forgets_one_key[{name}]")))?;
        keys_are_independent(&make, policy)
            .await
            .map_err(|v| v.context(format!("keys_are_independent[{name}]")))?;
        clock_going_back(&make, policy)
            .await
            .map_err(|v| v.context(format!("clock_going_back[{name}]")))?;
    }
    Ok(())
}

async fn build<F, Fut>(make: &F, policy: Policy, start: u64) -> (Arc<dyn Limiter>, ManualClock)
where
    F: Fn(Policy, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn Limiter>>,
{
    let clock = ManualClock::new(start);
    (make(policy, clock.clone()).await, clock)
}

async fn check(limiter: &dyn Limiter, key: &[u8], cost: u64) -> Result<Decision, Violation> {
    limiter
        .check(key, cost)
        .await
        .map_err(|e| Violation::new(format!("check(cost {cost}) failed: {e}")))
}

async fn peek(limiter: &dyn Limiter, key: &[u8]) -> Result<Decision, Violation> {
    limiter
        .peek(key)
        .await
        .map_err(|e| Violation::new(format!("peek failed: {e}")))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The route this workspace exists for: 5 requests per 30 s per client,
/// fixed window. Five pass with `remaining` 4 to 0, the sixth is denied
/// until the window ends, and the next window admits again.
///
/// # Errors
///
/// The first field that differs from the expected decision.
pub async fn upstash_generate_route<F, Fut>(make: &F) -> Result<(), Violation>
where
    F: Fn(Policy, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn Limiter>>,
{
    let policy = sample_policy(AlgorithmName::FixedWindow);
    let (limiter, clock) = build(make, policy, ALIGNED + 10_000_000).await;
    let ip = b"203.0.113.7";
    for i in 0..5u64 {
        let d = check(&*limiter, ip, 1).await?;
        let want = Decision::allowed(5, 4 - i, Duration::from_secs(20));
        ensure!(d == want, "request {}: expected {want:?}, got {d:?}", i + 1);
    }
    let sixth = check(&*limiter, ip, 1).await?;
    let want = Decision::denied(5, 0, Duration::from_secs(20), Duration::from_secs(20));
    ensure!(
        sixth == want,
        "sixth request: expected {want:?}, got {sixth:?}"
    );
    let other = check(&*limiter, b"198.51.100.1", 1).await?;
    ensure!(
        other.allowed && other.remaining == 4,
        "another client is limited: {other:?}"
    );
    clock.advance(Duration::from_secs(20));
    let next = check(&*limiter, ip, 1).await?;
    let want = Decision::allowed(5, 4, Duration::from_secs(30));
    ensure!(next == want, "next window: expected {want:?}, got {next:?}");
    Ok(())
}

/// Hand-computed sliding-window decisions (10 per 10 s), including the
/// rounding of the previous window's weight and a retry that crosses a
/// window boundary.
///
/// # Errors
///
/// The first decision that differs.
pub async fn sliding_window_vectors<F, Fut>(make: &F) -> Result<(), Violation>
where
    F: Fn(Policy, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn Limiter>>,
{
    let policy = sample_policy(AlgorithmName::SlidingWindow);
    // ALIGNED is also on a 10 s boundary.
    let (limiter, clock) = build(make, policy, ALIGNED + 1_000_000).await;
    let k = b"sliding";
    let d = check(&*limiter, k, 10).await?;
    let want = Decision::allowed(10, 0, Duration::from_secs(19));
    ensure!(d == want, "fill: expected {want:?}, got {d:?}");
    // 12 s: 80 % of the previous window's 10 still counts.
    clock.set(ALIGNED + 12_000_000);
    let d = peek(&*limiter, k).await?;
    let want = Decision::allowed(10, 2, Duration::from_secs(8));
    ensure!(d == want, "peek at 12 s: expected {want:?}, got {d:?}");
    let d = check(&*limiter, k, 3).await?;
    let want = Decision::denied(10, 2, Duration::from_secs(8), Duration::from_secs(1));
    ensure!(d == want, "3 at 12 s: expected {want:?}, got {d:?}");
    // 12.0005 s: weight ceil(10 * 7999.5/10000) — still 8, per whole ms.
    clock.set(ALIGNED + 12_000_500);
    let d = check(&*limiter, k, 2).await?;
    let want = Decision::allowed(10, 0, Duration::from_micros(17_999_500));
    ensure!(d == want, "2 at 12.0005 s: expected {want:?}, got {d:?}");
    // The current window now holds 2: a cost of 10 needs the previous
    // window to be empty, i.e. the 2 to decay away in the next window.
    let d = check(&*limiter, k, 10).await?;
    let want = Decision::denied(
        10,
        0,
        Duration::from_micros(17_999_500),
        Duration::from_micros(17_999_500),
    );
    ensure!(d == want, "10 at 12.0005 s: expected {want:?}, got {d:?}");
    Ok(())
}

/// Hand-computed token-bucket decisions (4, refilled at 1 per 500 ms).
///
/// # Errors
///
/// The first decision that differs.
pub async fn token_bucket_vectors<F, Fut>(make: &F) -> Result<(), Violation>
where
    F: Fn(Policy, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn Limiter>>,
{
    let policy = sample_policy(AlgorithmName::TokenBucket);
    let (limiter, clock) = build(make, policy, ALIGNED).await;
    let k = b"bucket";
    let d = check(&*limiter, k, 3).await?;
    let want = Decision::allowed(4, 1, Duration::from_millis(1500));
    ensure!(d == want, "3 of 4: expected {want:?}, got {d:?}");
    let d = check(&*limiter, k, 2).await?;
    let want = Decision::denied(
        4,
        1,
        Duration::from_millis(1500),
        Duration::from_millis(500),
    );
    ensure!(d == want, "2 more: expected {want:?}, got {d:?}");
    clock.advance(Duration::from_millis(750));
    let d = check(&*limiter, k, 2).await?;
    let want = Decision::allowed(4, 0, Duration::from_millis(1750));
    ensure!(d == want, "2 at 750 ms: expected {want:?}, got {d:?}");
    let d = peek(&*limiter, k).await?;
    let want = Decision::denied(
        4,
        0,
        Duration::from_millis(1750),
        Duration::from_millis(250),
    );
    ensure!(d == want, "peek at 750 ms: expected {want:?}, got {d:?}");
    Ok(())
}

/// Invariants 6 and 3: a fresh key admits the whole limit at once; the
/// next unit is denied exactly until `retry_after`.
///
/// # Errors
///
/// When a fresh key denies, or `retry_after` is not the smallest wait.
pub async fn liveness_and_retry<F, Fut>(make: &F, policy: Policy) -> Result<(), Violation>
where
    F: Fn(Policy, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn Limiter>>,
{
    let (limiter, clock) = build(make, policy, ALIGNED + 1_234_567).await;
    let limit = policy.limit();
    let d = check(&*limiter, b"k", limit).await?;
    ensure!(
        d.allowed && d.remaining == 0,
        "fresh key denied its full limit: {d:?}"
    );
    let denied = check(&*limiter, b"k", 1).await?;
    ensure!(!denied.allowed, "limit + 1 admitted: {denied:?}");
    let retry = micros(denied.retry_after.unwrap_or_default());
    ensure!(retry > 0, "denied with no wait: {denied:?}");
    clock.advance_micros(retry - 1);
    let early = check(&*limiter, b"k", 1).await?;
    ensure!(!early.allowed, "allowed 1 µs before retry_after: {early:?}");
    clock.advance_micros(1);
    let on_time = check(&*limiter, b"k", 1).await?;
    ensure!(on_time.allowed, "denied at retry_after: {on_time:?}");
    Ok(())
}

/// Invariant 2: after some traffic, a check of cost `remaining` is
/// allowed and then nothing more.
///
/// # Errors
///
/// When `remaining` is not exact.
pub async fn remaining_is_exact<F, Fut>(make: &F, policy: Policy) -> Result<(), Violation>
where
    F: Fn(Policy, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn Limiter>>,
{
    let (limiter, clock) = build(make, policy, ALIGNED + 2_500_000).await;
    let d = check(&*limiter, b"k", 1).await?;
    clock.advance(Duration::from_millis(1));
    let d2 = check(&*limiter, b"k", 1).await?;
    ensure!(d.allowed && d2.allowed, "first checks denied: {d:?} {d2:?}");
    let r = peek(&*limiter, b"k").await?.remaining;
    ensure!(
        r == d2.remaining,
        "peek remaining {r} != check remaining {}",
        d2.remaining
    );
    if r > 0 {
        let take = check(&*limiter, b"k", r).await?;
        ensure!(
            take.allowed && take.remaining == 0,
            "cost remaining={r} not admitted: {take:?}"
        );
    }
    let more = check(&*limiter, b"k", 1).await?;
    ensure!(!more.allowed, "admitted past remaining: {more:?}");
    Ok(())
}

/// Invariant 4: the quota is full at `reset_after` and not 1 µs earlier.
///
/// # Errors
///
/// When `reset_after` is not exact.
pub async fn reset_after_is_exact<F, Fut>(make: &F, policy: Policy) -> Result<(), Violation>
where
    F: Fn(Policy, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn Limiter>>,
{
    let (limiter, clock) = build(make, policy, ALIGNED + 3_000_001).await;
    let full = peek(&*limiter, b"k").await?;
    ensure!(
        full.reset_after.is_zero() && full.remaining == policy.limit(),
        "fresh key not full: {full:?}"
    );
    let d = check(&*limiter, b"k", 1).await?;
    let reset = micros(d.reset_after);
    ensure!(reset > 0, "reset_after zero after taking 1: {d:?}");
    clock.advance_micros(reset - 1);
    let early = peek(&*limiter, b"k").await?;
    ensure!(
        early.remaining < policy.limit(),
        "full 1 µs before reset_after: {early:?}"
    );
    clock.advance_micros(1);
    let on_time = peek(&*limiter, b"k").await?;
    ensure!(
        on_time.remaining == policy.limit() && on_time.reset_after.is_zero(),
        "not full at reset_after: {on_time:?}"
    );
    Ok(())
}

/// Invariant 1: denials change nothing a peek can see.
///
/// # Errors
///
/// When a denial changed the key.
pub async fn denials_are_free<F, Fut>(make: &F, policy: Policy) -> Result<(), Violation>
where
    F: Fn(Policy, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn Limiter>>,
{
    let (limiter, _clock) = build(make, policy, ALIGNED + 4_000_000).await;
    let limit = policy.limit();
    check(&*limiter, b"k", limit).await?;
    let before = peek(&*limiter, b"k").await?;
    for cost in [1, limit, 1] {
        let d = check(&*limiter, b"k", cost).await?;
        ensure!(!d.allowed, "admitted over the limit: {d:?}");
    }
    let after = peek(&*limiter, b"k").await?;
    ensure!(
        before == after,
        "denials changed the key: {before:?} -> {after:?}"
    );
    Ok(())
}

/// Invariant 8 (costs): zero and above-limit costs are errors of the right
/// kind and change nothing.
///
/// # Errors
///
/// When such a cost is decided, or changes the key.
pub async fn cost_out_of_range<F, Fut>(make: &F, policy: Policy) -> Result<(), Violation>
where
    F: Fn(Policy, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn Limiter>>,
{
    let (limiter, _clock) = build(make, policy, ALIGNED + 5_000_000).await;
    let limit = policy.limit();
    check(&*limiter, b"k", 1).await?;
    let before = peek(&*limiter, b"k").await?;
    for cost in [limit + 1, 0, u64::MAX] {
        let expected = if cost == 0 {
            ErrorKind::ZeroCost
        } else {
            ErrorKind::CostExceedsLimit { cost, limit }
        };
        match limiter.check(b"k", cost).await {
            Ok(d) => return Err(Violation::new(format!("cost {cost} was decided: {d:?}"))),
            Err(e) => ensure!(
                e.kind() == &expected,
                "cost {cost}: expected {expected:?}, got {e:?}"
            ),
        }
    }
    let after = peek(&*limiter, b"k").await?;
    ensure!(
        before == after,
        "a rejected cost changed the key: {before:?} -> {after:?}"
    );
    Ok(())
}

/// `reset` forgets exactly one key.
///
/// # Errors
///
/// When the reset key is not full or another key was touched.
pub async fn reset_forgets_one_key<F, Fut>(make: &F, policy: Policy) -> Result<(), Violation>
where
    F: Fn(Policy, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn Limiter>>,
{
    let (limiter, _clock) = build(make, policy, ALIGNED + 6_000_000).await;
    let limit = policy.limit();
    check(&*limiter, b"a", limit).await?;
    check(&*limiter, b"b", limit).await?;
    limiter
        .reset(b"a")
        .await
        .map_err(|e| Violation::new(format!("reset failed: {e}")))?;
    let a = peek(&*limiter, b"a").await?;
    ensure!(
        a.remaining == limit && a.reset_after.is_zero(),
        "reset key not full: {a:?}"
    );
    let b = peek(&*limiter, b"b").await?;
    ensure!(b.remaining == 0, "reset touched another key: {b:?}");
    limiter
        .reset(b"never-seen")
        .await
        .map_err(|e| Violation::new(format!("reset of an unknown key failed: {e}")))?;
    Ok(())
}

/// Invariant 8 (keys): awkward byte strings are distinct keys.
///
/// # Errors
///
/// When taking from one key shows on another.
pub async fn keys_are_independent<F, Fut>(make: &F, policy: Policy) -> Result<(), Violation>
where
    F: Fn(Policy, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn Limiter>>,
{
    let (limiter, _clock) = build(make, policy, ALIGNED + 7_000_000).await;
    let limit = policy.limit();
    let keys = awkward_keys();
    // Key i takes min(i + 1, limit): each key's remaining tells which it is.
    for (i, key) in keys.iter().enumerate() {
        let cost = (i as u64 + 1).min(limit);
        let d = check(&*limiter, key, cost).await?;
        ensure!(
            d.allowed,
            "key #{i} ({} bytes) denied on first use: {d:?}",
            key.len()
        );
    }
    for (i, key) in keys.iter().enumerate() {
        let cost = (i as u64 + 1).min(limit);
        let d = peek(&*limiter, key).await?;
        ensure!(
            d.remaining == limit - cost,
            "key #{i} ({} bytes) shows remaining {} instead of {}: keys collide",
            key.len(),
            d.remaining,
            limit - cost
        );
    }
    Ok(())
}

/// Invariant 7: after the limit is taken, moving the clock back (by up to
/// hours) admits nothing more, and moving it forward again admits no more
/// than before.
///
/// # Errors
///
/// When a rewound clock admits.
pub async fn clock_going_back<F, Fut>(make: &F, policy: Policy) -> Result<(), Violation>
where
    F: Fn(Policy, ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn Limiter>>,
{
    let start = ALIGNED + 8_000_000;
    let (limiter, clock) = build(make, policy, start).await;
    let limit = policy.limit();
    check(&*limiter, b"k", limit).await?;
    for back in [1u64, 1_000, 1_000_000, 3_600_000_000, 7_200_000_000] {
        clock.set(start - back);
        let d = check(&*limiter, b"k", 1).await?;
        ensure!(
            !d.allowed,
            "clock {back} µs back admitted after the limit was taken: {d:?}"
        );
        let p = peek(&*limiter, b"k").await?;
        ensure!(
            p.remaining == 0,
            "clock {back} µs back shows remaining {}",
            p.remaining
        );
    }
    clock.set(start);
    let d = check(&*limiter, b"k", 1).await?;
    ensure!(!d.allowed, "back at the latest time, admitted again: {d:?}");
    Ok(())
}
