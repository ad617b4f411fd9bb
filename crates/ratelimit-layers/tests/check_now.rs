//! `Limiter::check_now` agrees with `check` wherever it answers: the
//! in-process limiters, the pointer forwards and the wrappers that forward
//! it, over random sequences of (clock step, key, cost), with the same
//! limiter answering through either method from one call to the next.

mod support;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use ratelimit_core::{
    AlgorithmName, Decision, Error, FailurePolicy, Limiter, ManualClock, Policy, ReferenceLimiter,
};
use ratelimit_layers::{BreakerOptions, CircuitBreaker, DenyCache, Failover, Metered, Timeout};
use ratelimit_memory::MemoryLimiter;
use ratelimit_testkit::TestRecorder;
use support::Scripted;

/// One call: advance the clock by `step` µs, then check `key` at `cost`,
/// through `check_now` when `now`.
#[derive(Debug, Clone)]
struct Call {
    step: u64,
    key: u8,
    cost: u64,
    now: bool,
}

fn calls() -> impl Strategy<Value = Vec<Call>> {
    prop::collection::vec(
        (
            prop_oneof![Just(0u64), 0..2_000_000u64, 0..30_000_000u64],
            0..3u8,
            0..6u64,
            any::<bool>(),
        )
            .prop_map(|(step, key, cost, now)| Call {
                step,
                key,
                cost,
                now,
            }),
        1..60,
    )
}

fn policy(algorithm: AlgorithmName) -> Policy {
    let window = Duration::from_secs(10);
    match algorithm {
        AlgorithmName::FixedWindow => Policy::fixed_window(4, window),
        AlgorithmName::SlidingWindow => Policy::sliding_window(4, window),
        AlgorithmName::TokenBucket => Policy::token_bucket(4, 1, Duration::from_secs(3)),
    }
    .unwrap()
}

/// Every stack that answers at once, built fresh on `clock`.
fn stacks(policy: Policy, clock: &ManualClock) -> Vec<(&'static str, Arc<dyn Limiter>)> {
    let memory = || MemoryLimiter::with_clock(policy, clock.clone());
    fn cache<L: Limiter>(inner: L, clock: &ManualClock) -> DenyCache<L> {
        DenyCache::new(inner, NonZeroUsize::new(16).unwrap()).with_clock(clock.clone())
    }
    vec![
        (
            "reference",
            Arc::new(ReferenceLimiter::with_clock(policy, clock.clone())),
        ),
        ("memory", Arc::new(memory())),
        ("arc", Arc::new(Arc::new(memory()) as Arc<dyn Limiter>)),
        ("box", Arc::new(Box::new(memory()) as Box<dyn Limiter>)),
        (
            "timeout",
            Arc::new(Timeout::new(memory(), Duration::from_millis(5)).unwrap()),
        ),
        ("metered", Arc::new(Metered::new(memory()))),
        ("deny_cache", Arc::new(cache(memory(), clock))),
        (
            "stack",
            Arc::new(Metered::new(cache(
                Timeout::new(memory(), Duration::from_millis(5)).unwrap(),
                clock,
            ))),
        ),
    ]
}

fn same(a: &Result<Decision, Error>, b: &Result<Decision, Error>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => a.to_string() == b.to_string(),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn check_now_answers_as_check_does(
        algorithm in prop::sample::select(AlgorithmName::ALL.to_vec()),
        calls in calls(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let policy = policy(algorithm);
        let clock = ManualClock::new(1_000_000);
        // Twins on one clock: `mixed` answers through either method,
        // `awaited` through `check` only.
        let mixed = stacks(policy, &clock);
        let awaited = stacks(policy, &clock);
        for call in &calls {
            clock.advance(Duration::from_micros(call.step));
            let key = [b'k', call.key];
            for ((name, a), (_, b)) in mixed.iter().zip(&awaited) {
                let got = if call.now {
                    a.check_now(&key, call.cost)
                        .unwrap_or_else(|| panic!("{name} answers at once"))
                } else {
                    runtime.block_on(a.check(&key, call.cost))
                };
                let want = runtime.block_on(b.check(&key, call.cost));
                prop_assert!(same(&got, &want), "{name}: {got:?} != {want:?} for {call:?}");
            }
        }
    }
}

#[test]
fn limiters_that_must_wait_say_so_and_change_nothing() {
    let clock = ManualClock::new(0);
    let policy = support::policy();
    let store = Scripted::new(policy, clock.clone());
    assert!(store.check_now(b"k", 1).is_none(), "the default");
    let breaker = CircuitBreaker::new(Arc::clone(&store), BreakerOptions::default());
    let failover = Failover::new(Arc::clone(&store), FailurePolicy::Open);
    let timeout = Timeout::new(Arc::clone(&store), Duration::from_secs(1)).unwrap();
    let metered = Metered::new(Arc::clone(&store));
    let memory = CircuitBreaker::new(
        MemoryLimiter::with_clock(policy, clock.clone()),
        BreakerOptions::default(),
    );
    assert!(breaker.check_now(b"k", 1).is_none());
    assert!(failover.check_now(b"k", 1).is_none());
    assert!(timeout.check_now(b"k", 1).is_none());
    assert!(metered.check_now(b"k", 1).is_none());
    assert!(
        memory.check_now(b"k", 1).is_none(),
        "a breaker keeps its bookkeeping on the awaited path"
    );
    assert_eq!(store.calls(), 0, "none of them asked the store");
}

#[tokio::test]
async fn a_deny_cache_repeats_a_denial_at_once_over_a_store_that_waits() {
    let clock = ManualClock::new(0);
    let policy = Policy::fixed_window(1, Duration::from_secs(10)).unwrap();
    let store = Scripted::new(policy, clock.clone());
    let limiter =
        DenyCache::new(Arc::clone(&store), NonZeroUsize::new(4).unwrap()).with_clock(clock.clone());

    assert!(limiter.check_now(b"k", 1).is_none(), "nothing cached yet");
    assert!(limiter.check(b"k", 1).await.unwrap().allowed);
    assert!(
        limiter.check_now(b"k", 1).is_none(),
        "an admission is not cached"
    );
    let denied = limiter.check(b"k", 1).await.unwrap();
    assert!(!denied.allowed);
    let calls = store.calls();

    clock.advance(Duration::from_secs(4));
    let repeated = limiter
        .check_now(b"k", 1)
        .expect("a cached denial")
        .unwrap();
    assert_eq!(repeated, limiter.check(b"k", 1).await.unwrap());
    assert_eq!(repeated.retry_after, Some(Duration::from_secs(6)));
    assert_eq!(store.calls(), calls, "both answered from the cache");
    assert!(
        limiter.check_now(b"k", 2).is_none(),
        "another cost asks the store"
    );

    clock.advance(Duration::from_secs(6));
    assert!(
        limiter.check_now(b"k", 1).is_none(),
        "the denial has expired"
    );
    assert!(limiter.check(b"k", 1).await.unwrap().allowed);
}

#[test]
fn metered_counts_an_answer_at_once_as_an_awaited_one() {
    let recorder = TestRecorder::default();
    let clock = ManualClock::new(0);
    let policy = Policy::fixed_window(2, Duration::from_secs(10)).unwrap();
    let limiter = metrics::with_local_recorder(&recorder, || {
        Metered::new(MemoryLimiter::with_clock(policy, clock.clone()))
    });
    for _ in 0..3 {
        limiter.check_now(b"k", 1).unwrap().unwrap(); // 2 allowed, 1 denied
    }
    assert!(limiter.check_now(b"k", 3).unwrap().is_err());

    let count = |outcome| {
        recorder.counter(
            "ratelimit_decisions_total",
            &[("outcome", outcome), ("policy", "fixed_window")],
        )
    };
    assert_eq!(
        [
            count("allowed"),
            count("denied"),
            count("degraded"),
            count("error")
        ],
        [2, 1, 0, 1]
    );
    let seconds = recorder.histogram("ratelimit_decision_seconds", &[("policy", "fixed_window")]);
    assert_eq!(seconds.len(), 4, "{seconds:?}");
}
