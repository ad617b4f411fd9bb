//! The whole stack that `ResilienceConfig::wrap` builds: over a healthy
//! store it changes no decision (the conformance suite, and the
//! differential test against the pure model); over a failing one each
//! layer does its part in the right order.

mod support;

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use proptest::prelude::*;
use ratelimit_conformance::differential::check_against_model;
use ratelimit_conformance::strategy::{
    any_policy, awkward_keys, start_time, steps, SequenceOptions,
};
use ratelimit_core::{
    Decision, Error, FailurePolicy, Limiter, ManualClock, Policy, ReferenceLimiter,
};
use ratelimit_layers::{BreakerOptions, ResilienceConfig};
use ratelimit_testkit::Capture;
use support::{policy, Scripted};
use tracing::Level;

/// Fails the test on any degraded decision: over a healthy store, every
/// decision must be the store's.
struct NeverDegraded(Arc<dyn Limiter>);

impl NeverDegraded {
    fn pass(d: Decision) -> Decision {
        assert_eq!(
            d.degraded, None,
            "a healthy store's decision came out degraded"
        );
        d
    }
}

#[async_trait]
impl Limiter for NeverDegraded {
    async fn check(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
        self.0.check(key, cost).await.map(Self::pass)
    }

    async fn peek(&self, key: &[u8]) -> Result<Decision, Error> {
        self.0.peek(key).await.map(Self::pass)
    }

    async fn reset(&self, key: &[u8]) -> Result<(), Error> {
        self.0.reset(key).await
    }

    fn policies(&self) -> &[Policy] {
        self.0.policies()
    }
}

/// Every layer `wrap` can add, but the deny cache: it runs on the system
/// clock, which the suite's manual clock does not move (it has its own
/// test).
fn config() -> ResilienceConfig {
    ResilienceConfig::default()
        .with_timeout(Some(Duration::from_secs(5)))
        .unwrap()
}

fn stacked(policy: Policy, clock: ManualClock) -> Arc<dyn Limiter> {
    let store = Arc::new(ReferenceLimiter::with_clock(policy, clock));
    Arc::new(NeverDegraded(config().wrap(store)))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime builds")
}

#[test]
fn the_conformance_suite_passes_through_the_stack() {
    for failure in FailurePolicy::ALL {
        runtime()
            .block_on(ratelimit_conformance::scenarios::run_all(
                |policy, clock| async move {
                    let store = Arc::new(ReferenceLimiter::with_clock(policy, clock));
                    let limiter = config().with_failure(failure).wrap(store);
                    Arc::new(NeverDegraded(limiter)) as Arc<dyn Limiter>
                },
            ))
            .unwrap_or_else(|v| panic!("failure = {failure}: {v}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Decision for decision with the pure model, awkward keys and clocks
    /// going back included.
    #[test]
    fn the_stack_agrees_with_the_model(
        (policy, start, steps) in any_policy().prop_flat_map(|p| {
            let keys = awkward_keys().len();
            (Just(p), start_time(), steps(&p, SequenceOptions::default().with_keys(keys)))
        })
    ) {
        let clock = ManualClock::new(start);
        let limiter = stacked(policy, clock.clone());
        let result = runtime().block_on(check_against_model(
            limiter.as_ref(), &clock, &policy, &awkward_keys(), start, &steps,
        ));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

/// A failing store under the full stack: the cache answers what it knows,
/// the breaker stops the calls, the failover decides and says so, and its
/// denial waits for the breaker.
#[tokio::test(start_paused = true)]
async fn over_a_failing_store_each_layer_does_its_part() {
    let open_for = Duration::from_secs(2);
    let config = ResilienceConfig::default()
        .with_timeout(Some(Duration::from_millis(100)))
        .unwrap()
        .with_breaker(
            BreakerOptions::default()
                .with_failure_threshold(NonZeroU32::new(2).unwrap())
                .with_open_for(open_for),
        )
        .with_deny_cache(NonZeroUsize::new(100));
    let store = Scripted::new(policy(), ManualClock::new(0));
    let limiter = config.wrap(store.clone());

    limiter.check(b"hot", 3).await.unwrap();
    let denied = limiter.check_one(b"hot").await.unwrap();
    assert!(!denied.allowed && !denied.is_degraded());

    store.hang(true);
    let calls = store.calls();
    // Two timeouts open the breaker; later calls never reach the store.
    for _ in 0..10 {
        let d = limiter.check_one(b"cold").await.unwrap();
        assert_eq!(d.degraded, Some(FailurePolicy::Closed));
        assert_eq!(d.retry_after, Some(open_for));
    }
    assert_eq!(store.calls(), calls + 2);
    // The hot key's denial is still the store's, from the cache.
    let cached = limiter.check_one(b"hot").await.unwrap();
    assert!(!cached.allowed && !cached.is_degraded());
    assert_eq!(store.calls(), calls + 2);

    // The store is back; after open_for the probe goes through, and the
    // fail-closed denials were never cached.
    store.hang(false);
    tokio::time::advance(open_for).await;
    let d = limiter.check_one(b"cold").await.unwrap();
    assert!(d.allowed && !d.is_degraded());
    assert_eq!(d.remaining, 2);
}

/// During an outage, denials answered from the deny cache are interleaved
/// with degraded decisions: still one WARN when the outage starts and one
/// INFO when it ends, not one pair per cached answer.
#[tokio::test(start_paused = true)]
async fn cached_denials_during_an_outage_do_not_flap_the_logs() {
    let (logs, _guard) = Capture::install();
    let config = ResilienceConfig::default()
        .with_failure(FailurePolicy::Open)
        .with_deny_cache(NonZeroUsize::new(100));
    let store = Scripted::new(policy(), ManualClock::new(0));
    let limiter = config.wrap(store.clone());
    limiter.check(b"hot", 3).await.unwrap();
    assert!(!limiter.check_one(b"hot").await.unwrap().allowed);

    store.fail_next(u64::MAX);
    for _ in 0..10 {
        assert!(limiter.check_one(b"cold").await.unwrap().is_degraded());
        let cached = limiter.check_one(b"hot").await.unwrap();
        assert!(!cached.allowed && !cached.is_degraded());
    }
    store.fail_next(0);
    tokio::time::advance(config.breaker().open_for).await;
    assert!(!limiter.check_one(b"cold").await.unwrap().is_degraded());

    let degraded = |level| {
        logs.events(level)
            .into_iter()
            .filter(|e| e.contains("degraded"))
            .count()
    };
    assert_eq!(degraded(Level::WARN), 1, "{:?}", logs.events(Level::WARN));
    assert_eq!(degraded(Level::INFO), 1, "{:?}", logs.events(Level::INFO));
}
