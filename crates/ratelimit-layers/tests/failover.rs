//! `Failover` against the reference limiter behind a store that fails on
//! cue: each policy's decision, its logs and its counts.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{FailurePolicy, Limiter, ManualClock, ReferenceLimiter};
use ratelimit_layers::Failover;
use ratelimit_testkit::{Capture, TestRecorder};
use support::{policy, Scripted};
use tracing::Level;

#[tokio::test]
async fn closed_denies_open_allows_and_both_say_so() {
    for failure in [FailurePolicy::Closed, FailurePolicy::Open] {
        let store = Scripted::new(policy(), ManualClock::new(0));
        let limiter = Failover::new(Arc::clone(&store), failure)
            .with_retry_after(Duration::from_millis(1500));
        store.fail_next(2);
        let checked = limiter.check_one(b"k").await.unwrap();
        let peeked = limiter.peek(b"k").await.unwrap();
        for d in [checked, peeked] {
            assert_eq!(d.degraded, Some(failure));
            assert_eq!((d.limit, d.reset_after), (3, Duration::ZERO));
            match failure {
                FailurePolicy::Closed => {
                    assert!(!d.allowed);
                    assert_eq!(d.remaining, 0);
                    assert_eq!(d.retry_after, Some(Duration::from_millis(1500)));
                }
                _ => {
                    assert!(d.allowed);
                    assert_eq!((d.remaining, d.retry_after), (3, None));
                }
            }
        }
        assert_eq!(limiter.degraded_decisions(), 2);
        // The store is back: its own decision, unmarked.
        let d = limiter.check_one(b"k").await.unwrap();
        assert_eq!((d.degraded, d.remaining), (None, 2));
    }
}

#[tokio::test]
async fn fallback_counts_locally() {
    let clock = ManualClock::new(0);
    let store = Scripted::new(policy(), clock.clone());
    let local = Arc::new(ReferenceLimiter::with_clock(policy(), clock.clone()));
    let limiter = Failover::new(Arc::clone(&store), FailurePolicy::Fallback)
        .with_fallback(Arc::clone(&local) as Arc<dyn Limiter>);
    store.fail_next(u64::MAX);
    for remaining in [2, 1, 0] {
        let d = limiter.check_one(b"k").await.unwrap();
        assert_eq!((d.allowed, d.remaining), (true, remaining));
        assert_eq!(d.degraded, Some(FailurePolicy::Fallback));
    }
    let d = limiter.check_one(b"k").await.unwrap();
    assert!(!d.allowed && d.is_degraded());
    assert!(!limiter.peek(b"k").await.unwrap().allowed);
    assert_eq!(
        local.peek_sync(b"k").remaining,
        0,
        "the given fallback counted"
    );
    assert!(limiter.reset(b"k").await.is_err(), "the store cannot reset");
    assert_eq!(
        local.peek_sync(b"k").remaining,
        3,
        "but the fallback forgot"
    );

    // The default fallback is an in-process limiter of the same policy.
    // (On the system clock: one check, so no window boundary can matter.)
    let default = Failover::new(Arc::clone(&store), FailurePolicy::Fallback);
    let d = default.check(b"k", 3).await.unwrap();
    assert_eq!(
        (d.remaining, d.degraded),
        (0, Some(FailurePolicy::Fallback))
    );
}

#[tokio::test]
async fn costs_that_can_never_be_taken_stay_errors() {
    let store = Scripted::new(policy(), ManualClock::new(0));
    for failure in FailurePolicy::ALL {
        let limiter = Failover::new(Arc::clone(&store), failure);
        assert!(limiter.check(b"k", 4).await.unwrap_err().is_cost_rejected());
        store.fail_next(1);
        // Even when the store is down: no policy allows it.
        assert!(limiter.check(b"k", 0).await.unwrap_err().is_cost_rejected());
        assert_eq!(limiter.degraded_decisions(), 0);
        store.fail_next(0);
    }
}

#[tokio::test]
async fn one_warn_per_outage_one_info_per_recovery_and_counted() {
    let (logs, _guard) = Capture::install();
    let recorder = TestRecorder::default();
    let store = Scripted::new(policy(), ManualClock::new(0));
    let limiter = metrics::with_local_recorder(&recorder, || {
        Failover::new(Arc::clone(&store), FailurePolicy::Open)
    });
    assert!(limiter.check_one(b"k").await.is_ok());
    for outage in 0..2 {
        store.fail_next(25);
        for _ in 0..25 {
            assert!(limiter.check_one(b"k").await.unwrap().is_degraded());
        }
        assert!(limiter.is_degraded());
        for _ in 0..5 {
            assert!(!limiter.check_one(b"other").await.unwrap().is_degraded());
        }
        assert!(!limiter.is_degraded());
        let warnings = logs.events(Level::WARN);
        assert_eq!(warnings.len(), outage + 1, "{warnings:?}");
        assert!(
            warnings[outage].contains("decisions are degraded")
                && warnings[outage].contains("error=rate-limit backend failed: connection refused")
                && warnings[outage].contains("failure=open"),
            "{}",
            warnings[outage]
        );
        let infos = logs.events(Level::INFO);
        assert_eq!(infos.len(), outage + 1, "{infos:?}");
        assert!(
            infos[outage].contains("no longer degraded"),
            "{}",
            infos[outage]
        );
    }
    assert_eq!(
        limiter.last_error().as_deref(),
        Some("rate-limit backend failed: connection refused")
    );
    assert_eq!(limiter.degraded_decisions(), 50);
    assert_eq!(
        recorder.counter("ratelimit_degraded_decisions_total", &[("failure", "open")]),
        50
    );
}
