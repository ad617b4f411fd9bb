//! The layers over a policy set: each failure policy, settles the store
//! cannot take, the breaker, the timeout and the metrics.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{FailurePolicy, ManualClock, Reservation, SetLimiter};
use ratelimit_layers::{
    BreakerOptions, CircuitBreaker, Metered, ResilienceConfig, SetFailover, Timeout,
};
use ratelimit_testkit::{Capture, TestRecorder};
use support::{set, ScriptedSet};
use tracing::Level;

fn failover(store: &Arc<ScriptedSet>, failure: FailurePolicy) -> SetFailover<Arc<ScriptedSet>> {
    SetFailover::new(Arc::clone(store), failure).with_retry_after(Duration::from_secs(7))
}

#[tokio::test]
async fn closed_denies_every_policy_with_the_breakers_wait_and_no_receipt() {
    let store = ScriptedSet::new(set(), ManualClock::new(0));
    let limiter = failover(&store, FailurePolicy::Closed);
    store.fail_next(1);
    let check = limiter.check_set(b"k", &[1, 10, 1]).await.unwrap();
    assert!(!check.decision.allowed);
    assert_eq!(check.decision.degraded, Some(FailurePolicy::Closed));
    assert_eq!(check.decision.retry_after, Some(Duration::from_secs(7)));
    assert!(check
        .decision
        .decisions
        .iter()
        .all(|d| !d.allowed && d.is_degraded()));
    assert!(check.receipt.is_none());
    // Costs the store would refuse stay errors, outage or not.
    store.fail_next(1);
    assert!(limiter
        .check_set(b"k", &[1, 101, 1])
        .await
        .unwrap_err()
        .is_cost_rejected());
    store.fail_next(1);
    assert!(limiter
        .check_set(b"k", &[1, 1])
        .await
        .unwrap_err()
        .is_invalid());
    assert_eq!(limiter.degraded_decisions(), 1);
}

#[tokio::test]
async fn open_allows_with_a_receipt_that_settles_nowhere() {
    let clock = ManualClock::new(0);
    let store = ScriptedSet::new(set(), clock);
    let limiter = Arc::new(failover(&store, FailurePolicy::Open));
    store.fail_next(1);
    let held = Reservation::acquire(Arc::clone(&limiter), b"k", &[1, 10, 1])
        .await
        .unwrap()
        .expect("fail open allows");
    assert_eq!(held.decision().degraded, Some(FailurePolicy::Open));
    assert_eq!(held.receipt().degraded_by(), Some(FailurePolicy::Open));
    let calls = store.calls();
    let after = held.settle(&[1, 3, 0]).await.unwrap();
    assert_eq!(after.degraded, Some(FailurePolicy::Open));
    assert_eq!(
        store.calls(),
        calls,
        "a degraded receipt never reaches the store"
    );
    // The store, answering again, took nothing for it.
    let peek = store.store.peek_set_sync(b"k");
    assert_eq!(peek.decisions[0].remaining, 3);
    assert_eq!(peek.decisions[2].remaining, 1);
}

#[tokio::test]
async fn fallback_decides_in_process_and_its_receipts_settle_there() {
    let clock = ManualClock::new(0);
    let store = ScriptedSet::new(set(), clock.clone());
    let local = Arc::new(ratelimit_core::ReferenceSetLimiter::with_clock(
        set(),
        clock,
    ));
    let limiter = Arc::new(
        failover(&store, FailurePolicy::Fallback)
            .with_fallback(Arc::clone(&local) as Arc<dyn SetLimiter>),
    );
    store.fail_next(1);
    let held = Reservation::acquire(Arc::clone(&limiter), b"k", &[1, 60, 1])
        .await
        .unwrap()
        .expect("the fallback allows");
    assert_eq!(held.decision().degraded, Some(FailurePolicy::Fallback));
    assert_eq!(local.leases_held(b"k"), 1);
    // The store is back, but this receipt belongs to the fallback.
    let after = held.settle(&[1, 20, 0]).await.unwrap();
    assert_eq!(after.degraded, Some(FailurePolicy::Fallback));
    assert_eq!(after.decisions[1].remaining, 80);
    assert_eq!(local.leases_held(b"k"), 0);
    assert_eq!(store.store.leases_held(b"k"), 0);
    // A dropped fallback reservation releases its lease in the fallback.
    store.fail_next(1);
    let held = Reservation::acquire(Arc::clone(&limiter), b"k", &[1, 10, 1])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(local.leases_held(b"k"), 1);
    drop(held);
    assert_eq!(local.leases_held(b"k"), 0);
}

#[tokio::test]
async fn a_settle_the_store_cannot_take_keeps_the_estimate_is_counted_and_logged_once() {
    let (logs, _guard) = Capture::install();
    let recorder = TestRecorder::default();
    let clock = ManualClock::new(0);
    let store = ScriptedSet::new(set(), clock.clone());
    let limiter = metrics::with_local_recorder(&recorder, || {
        Arc::new(Metered::for_set(failover(&store, FailurePolicy::Closed)))
    });
    let first = limiter.check_set(b"k", &[1, 40, 0]).await.unwrap();
    let second = limiter.check_set(b"k", &[1, 40, 0]).await.unwrap();
    store.fail_next(2);
    for check in [first, second] {
        let err = limiter
            .settle(check.receipt.unwrap(), &[1, 5, 0])
            .await
            .unwrap_err();
        assert!(err.is_backend(), "{err}");
    }
    let peek = store.store.peek_set_sync(b"k");
    assert_eq!(
        peek.decisions[1].remaining, 20,
        "both estimates stay charged"
    );
    let warnings = logs.events(Level::WARN);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("cannot settle"), "{}", warnings[0]);
    assert_eq!(recorder.counter("ratelimit_settle_failures_total", &[]), 2);
    assert_eq!(
        recorder.counter("ratelimit_settles_total", &[("outcome", "error")]),
        2
    );
    assert_eq!(
        recorder.counter(
            "ratelimit_decisions_total",
            &[("outcome", "allowed"), ("policy", "set")]
        ),
        2
    );
    // A lease whose settle failed is freed by its TTL.
    let check = limiter.check_set(b"k", &[1, 1, 1]).await.unwrap();
    store.fail_next(1);
    assert!(limiter
        .settle(check.receipt.unwrap(), &[1, 1, 0])
        .await
        .is_err());
    assert_eq!(store.store.leases_held(b"k"), 1);
    clock.advance(Duration::from_secs(10));
    assert_eq!(store.store.leases_held(b"k"), 0);
}

#[tokio::test]
async fn the_breaker_opens_on_failing_set_calls_and_stops_calling_the_store() {
    let store = ScriptedSet::new(set(), ManualClock::new(0));
    let options = BreakerOptions::default()
        .with_failure_threshold(std::num::NonZeroU32::new(2).unwrap())
        .with_open_for(Duration::from_secs(60));
    let breaker = CircuitBreaker::new(Arc::clone(&store), options);
    store.fail_next(2);
    for _ in 0..2 {
        assert!(breaker.check_set(b"k", &[1, 1, 0]).await.is_err());
    }
    let calls = store.calls();
    let err = breaker.check_set(b"k", &[1, 1, 0]).await.unwrap_err();
    assert!(err.is_backend(), "{err}");
    assert_eq!(
        store.calls(),
        calls,
        "an open breaker does not call the store"
    );
    // Invalid calls teach the breaker nothing.
    let fresh = CircuitBreaker::new(Arc::clone(&store), options);
    for _ in 0..3 {
        assert!(fresh.check_set(b"k", &[1]).await.unwrap_err().is_invalid());
    }
    assert_eq!(fresh.state(), ratelimit_layers::BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn the_timeout_bounds_every_set_call() {
    let store = ScriptedSet::new(set(), ManualClock::new(0));
    let limiter = Timeout::new(Arc::clone(&store), Duration::from_millis(50)).unwrap();
    let check = limiter.check_set(b"k", &[1, 1, 1]).await.unwrap();
    store.hang(true);
    assert!(limiter
        .check_set(b"k", &[1, 1, 0])
        .await
        .unwrap_err()
        .is_timeout());
    assert!(limiter.peek_set(b"k").await.unwrap_err().is_timeout());
    let mut receipt = check.receipt.unwrap();
    assert!(limiter.renew(&mut receipt).await.unwrap_err().is_timeout());
    assert!(limiter
        .settle(receipt, &[1, 1, 0])
        .await
        .unwrap_err()
        .is_timeout());
}

#[tokio::test]
async fn the_configured_stack_decides_and_degrades() {
    let store = ScriptedSet::new(set(), ManualClock::new(0));
    let config: ResilienceConfig = toml::from_str("failure = \"open\"\ntimeout = \"1s\"").unwrap();
    let limiter = config.wrap_set(Arc::clone(&store) as Arc<dyn SetLimiter>, None);
    assert_eq!(limiter.policy_set().len(), 3);
    let check = limiter.check_set(b"k", &[1, 1, 1]).await.unwrap();
    assert!(check.decision.allowed && check.decision.degraded.is_none());
    limiter.release(check.receipt.unwrap());
    assert_eq!(
        store.store.leases_held(b"k"),
        0,
        "released through every layer"
    );
    store.fail_next(1);
    let check = limiter.check_set(b"k", &[1, 1, 1]).await.unwrap();
    assert_eq!(check.decision.degraded, Some(FailurePolicy::Open));
}
