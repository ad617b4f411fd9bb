//! `CircuitBreaker` against the reference limiter behind a store that
//! fails on cue; time is tokio's, paused.

mod support;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{ErrorChain, Limiter, ManualClock};
use ratelimit_layers::{BreakerOptions, BreakerState, CircuitBreaker, Timeout};
use ratelimit_testkit::{Capture, TestRecorder};
use support::{policy, Scripted};
use tracing::Level;

const OPEN_FOR: Duration = Duration::from_secs(1);

fn options() -> BreakerOptions {
    BreakerOptions::default()
        .with_failure_threshold(NonZeroU32::new(3).unwrap())
        .with_open_for(OPEN_FOR)
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures_probes_once_and_closes() {
    let (logs, _guard) = Capture::install();
    let recorder = TestRecorder::default();
    let store = Scripted::new(policy(), ManualClock::new(0));
    let breaker = metrics::with_local_recorder(&recorder, || {
        CircuitBreaker::new(Arc::clone(&store), options())
    });
    assert_eq!(recorder.gauge("ratelimit_breaker_state"), 0.0);

    // Two failures, a success: the count starts again.
    store.fail_next(2);
    assert!(breaker.check_one(b"k").await.is_err());
    assert!(breaker.check_one(b"k").await.is_err());
    assert!(breaker.check_one(b"k").await.is_ok());
    assert_eq!(breaker.state(), BreakerState::Closed);

    // Three in a row open it; the calls after it never reach the store.
    store.fail_next(u64::MAX);
    for _ in 0..3 {
        assert!(breaker.check_one(b"k").await.is_err());
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(recorder.gauge("ratelimit_breaker_state"), 1.0);
    let reached = store.calls();
    for _ in 0..50 {
        let err = breaker.check_one(b"k").await.unwrap_err();
        assert!(err.is_backend());
        assert_eq!(
            ErrorChain(&err).to_string(),
            "rate-limit backend failed: circuit breaker open: the store recently failed"
        );
    }
    assert!(breaker.peek(b"k").await.is_err() && breaker.reset(b"k").await.is_err());
    assert_eq!(
        store.calls(),
        reached,
        "an open breaker does not touch the store"
    );

    // After open_for, one probe; it fails: open again for open_for.
    tokio::time::advance(OPEN_FOR).await;
    assert!(breaker.check_one(b"k").await.is_err());
    assert_eq!(store.calls(), reached + 1, "exactly one probe");
    assert_eq!(breaker.state(), BreakerState::Open);
    assert!(breaker.check_one(b"k").await.is_err());
    assert_eq!(store.calls(), reached + 1);

    // The store is back: the next probe closes the breaker.
    store.fail_next(0);
    tokio::time::advance(OPEN_FOR).await;
    assert_eq!(breaker.check_one(b"k").await.unwrap().remaining, 1);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(recorder.gauge("ratelimit_breaker_state"), 0.0);
    assert!(breaker.check_one(b"k").await.is_ok());

    let warnings = logs.events(Level::WARN);
    assert_eq!(
        warnings.len(),
        1,
        "one WARN for the whole outage: {warnings:?}"
    );
    assert!(
        warnings[0].contains("circuit breaker opened")
            && warnings[0].contains("error=rate-limit backend failed: connection refused"),
        "{}",
        warnings[0]
    );
    let infos = logs.events(Level::INFO);
    assert_eq!(infos.len(), 1, "{infos:?}");
    assert!(infos[0].contains("circuit breaker closed"), "{}", infos[0]);
    assert_eq!(
        recorder.counter("ratelimit_breaker_openings_total", &[]),
        1,
        "a failed probe is no new opening"
    );
}

#[tokio::test(start_paused = true)]
async fn only_one_of_concurrent_callers_probes() {
    let store = Scripted::new(policy(), ManualClock::new(0));
    let breaker = Arc::new(CircuitBreaker::new(Arc::clone(&store), options()));
    store.fail_next(3);
    for _ in 0..3 {
        let _ = breaker.check_one(b"k").await;
    }
    tokio::time::advance(OPEN_FOR).await;
    // The probe hangs, so the others arrive while it is in flight.
    store.hang(true);
    let probe = tokio::spawn({
        let breaker = Arc::clone(&breaker);
        async move { breaker.check_one(b"k").await.map(|d| d.remaining) }
    });
    tokio::task::yield_now().await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    let reached = store.calls();
    for _ in 0..10 {
        // Bounded, so that a breaker letting these through fails the test
        // instead of hanging it.
        let other = tokio::time::timeout(OPEN_FOR, breaker.check_one(b"k")).await;
        assert!(other.expect("fails at once").is_err());
    }
    assert_eq!(store.calls(), reached, "the others fail at once");
    // The probe's caller gives up: that counts as a failed probe.
    probe.abort();
    assert!(probe.await.unwrap_err().is_cancelled());
    assert_eq!(breaker.state(), BreakerState::Open);
    store.hang(false);
    tokio::time::advance(OPEN_FOR).await;
    assert!(
        breaker.check_one(b"k").await.is_ok(),
        "and probes again later"
    );
}

#[tokio::test(start_paused = true)]
async fn timeouts_count_and_rejected_costs_do_not() {
    let store = Scripted::new(policy(), ManualClock::new(0));
    let breaker = CircuitBreaker::new(
        Timeout::new(Arc::clone(&store), Duration::from_millis(100)).unwrap(),
        options(),
    );
    for _ in 0..10 {
        assert!(breaker.check(b"k", 4).await.unwrap_err().is_cost_rejected());
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    store.hang(true);
    for _ in 0..3 {
        assert!(breaker.check_one(b"k").await.unwrap_err().is_timeout());
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(breaker.open_for(), OPEN_FOR);

    // A probe whose cost can never be taken says nothing about the store:
    // the next call probes instead.
    store.hang(false);
    tokio::time::advance(OPEN_FOR).await;
    assert!(breaker.check(b"k", 4).await.unwrap_err().is_cost_rejected());
    assert_eq!(breaker.state(), BreakerState::Open);
    assert!(breaker.check_one(b"k").await.is_ok());
    assert_eq!(breaker.state(), BreakerState::Closed);
}

/// A key holding a value the limiter did not write is that key's failure:
/// the store answered, so any number of them never open the breaker, and
/// the store's own failures are counted from zero after one.
#[tokio::test(start_paused = true)]
async fn foreign_values_are_not_store_failures() {
    let store = Scripted::new(policy(), ManualClock::new(0));
    let breaker = CircuitBreaker::new(Arc::clone(&store), options());
    store.foreign_next(10);
    for _ in 0..10 {
        assert!(breaker.check_one(b"k").await.unwrap_err().is_data());
    }
    assert_eq!(breaker.state(), BreakerState::Closed);

    store.fail_next(2);
    assert!(breaker.check_one(b"k").await.is_err());
    assert!(breaker.check_one(b"k").await.is_err());
    store.foreign_next(1);
    assert!(breaker.check_one(b"k").await.unwrap_err().is_data());
    store.fail_next(2);
    assert!(breaker.check_one(b"k").await.is_err());
    assert!(breaker.check_one(b"k").await.is_err());
    assert_eq!(breaker.state(), BreakerState::Closed, "never 3 in a row");
    assert!(breaker.check_one(b"k").await.unwrap().allowed);
}
