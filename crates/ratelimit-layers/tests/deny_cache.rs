//! `DenyCache` against the reference limiter, on a manual clock.

mod support;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{FailurePolicy, Limiter, ManualClock, Policy, ReferenceLimiter};
use ratelimit_layers::{DenyCache, Failover};
use support::Scripted;

fn cache<L: Limiter>(inner: L, clock: &ManualClock) -> DenyCache<L> {
    DenyCache::new(inner, NonZeroUsize::new(16).unwrap()).with_clock(clock.clone())
}

#[tokio::test]
async fn repeats_denials_locally_until_retry_after() {
    let clock = ManualClock::new(0);
    let policy = Policy::fixed_window(3, Duration::from_secs(10)).unwrap();
    let store = Scripted::new(policy, clock.clone());
    let limiter = cache(Arc::clone(&store), &clock);

    assert!(limiter.check(b"k", 2).await.unwrap().allowed);
    let denied = limiter.check(b"k", 2).await.unwrap();
    assert!(!denied.allowed);
    let calls = store.calls();

    clock.advance(Duration::from_secs(3));
    for _ in 0..5 {
        let repeated = limiter.check(b"k", 2).await.unwrap();
        // Exactly what the store would say now.
        assert_eq!(repeated, store.store.check_sync(b"k", 2).unwrap());
        assert_eq!(repeated.retry_after, Some(Duration::from_secs(7)));
    }
    assert_eq!(store.calls(), calls, "the denied cost stays local");
    assert!(!limiter.check(b"k", 3).await.unwrap().allowed);
    assert_eq!(store.calls(), calls + 1, "another cost asks the store");

    // A smaller cost may fit: it goes to the store (and an admission forgets
    // the denial).
    assert!(limiter.check_one(b"k").await.unwrap().allowed);
    assert_eq!(store.calls(), calls + 2);
    assert_eq!(limiter.cached(), 0);
    assert!(!limiter.check_one(b"k").await.unwrap().allowed);
    assert_eq!(limiter.cached(), 1);

    // Once retry_after has passed, the store decides again.
    clock.advance(Duration::from_secs(7));
    assert!(limiter.check(b"k", 3).await.unwrap().allowed);
}

#[tokio::test]
async fn a_reset_forgets_and_peeks_ask_the_store() {
    let clock = ManualClock::new(0);
    let store = Scripted::new(support::policy(), clock.clone());
    let limiter = cache(Arc::clone(&store), &clock);
    limiter.check(b"k", 3).await.unwrap();
    assert!(!limiter.check_one(b"k").await.unwrap().allowed);
    let calls = store.calls();
    assert!(!limiter.peek(b"k").await.unwrap().allowed);
    assert_eq!(store.calls(), calls + 1);
    limiter.reset(b"k").await.unwrap();
    assert_eq!(limiter.cached(), 0);
    assert_eq!(limiter.check_one(b"k").await.unwrap().remaining, 2);
}

#[tokio::test]
async fn never_repeats_a_degraded_denial() {
    let clock = ManualClock::new(0);
    let store = Scripted::new(support::policy(), clock.clone());
    // Above a Failover (where ResilienceConfig puts it), the cache sees the
    // failure policy's decisions, and never records them.
    let limiter = cache(
        Failover::new(Arc::clone(&store), FailurePolicy::Closed),
        &clock,
    );
    store.fail_next(1);
    let d = limiter.check_one(b"k").await.unwrap();
    assert!(!d.allowed && d.is_degraded());
    assert_eq!(limiter.cached(), 0);
    assert!(
        limiter.check_one(b"k").await.unwrap().allowed,
        "the store is back"
    );
}

/// The store's decisions come out unchanged through the cache in every
/// scenario of the conformance suite (fixed costs, known answers).
#[tokio::test]
async fn the_conformance_scenarios_pass_through_the_cache() {
    ratelimit_conformance::scenarios::run_all(|policy, clock| async move {
        let store = ReferenceLimiter::with_clock(policy, clock.clone());
        Arc::new(cache(store, &clock)) as Arc<dyn Limiter>
    })
    .await
    .unwrap();
}
