//! `Metered`: counts by outcome, timings, and a span with the key hashed.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{FailurePolicy, Limiter, ManualClock};
use ratelimit_layers::{Failover, KeyHash, Metered, Timeout};
use ratelimit_testkit::{Capture, TestRecorder};
use support::{policy, Scripted};

#[tokio::test(start_paused = true)]
async fn counts_each_outcome_and_times_each_check() {
    let recorder = TestRecorder::default();
    let store = Scripted::new(policy(), ManualClock::new(0));
    let (plain, degraded) = metrics::with_local_recorder(&recorder, || {
        (
            Metered::new(Timeout::new(Arc::clone(&store), Duration::from_millis(250)).unwrap()),
            Metered::new(Failover::new(Arc::clone(&store), FailurePolicy::Closed)),
        )
    });
    for _ in 0..4 {
        plain.check_one(b"k").await.unwrap(); // 3 allowed, 1 denied
    }
    store.hang(true);
    assert!(plain.check_one(b"k").await.unwrap_err().is_timeout());
    store.hang(false);
    store.fail_next(2);
    assert!(degraded.check_one(b"k").await.unwrap().is_degraded());
    assert!(degraded.check_one(b"k").await.unwrap().is_degraded());
    assert!(
        plain.check(b"k", 9).await.is_err(),
        "a rejected cost is an error too"
    );

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
        [3, 1, 2, 2]
    );
    let seconds = recorder.histogram("ratelimit_decision_seconds", &[("policy", "fixed_window")]);
    assert_eq!(seconds.len(), 8, "{seconds:?}");
    // Paused time: only the timed-out check took any.
    assert_eq!(
        seconds.iter().filter(|s| **s == 0.25).count(),
        1,
        "{seconds:?}"
    );
    assert_eq!(
        seconds.iter().filter(|s| **s == 0.0).count(),
        7,
        "{seconds:?}"
    );
}

#[tokio::test]
async fn traces_each_check_with_the_key_hashed() {
    let (logs, _guard) = Capture::install();
    let store = Scripted::new(policy(), ManualClock::new(0));
    let limiter = Metered::new(Arc::clone(&store));
    let key = b"203.0.113.7";
    limiter.check(key, 2).await.unwrap();
    let spans: Vec<_> = logs
        .all()
        .into_iter()
        .filter(|c| c.name.starts_with("ratelimit.check"))
        .collect();
    assert_eq!(
        spans.len(),
        2,
        "the span and its recorded outcome: {spans:?}"
    );
    assert_eq!(spans[0].level, tracing::Level::DEBUG);
    let hashed = KeyHash(key).to_string();
    assert_eq!(
        spans[0].text,
        format!(" key={hashed} cost=2 policy=fixed_window")
    );
    assert_eq!(spans[1].text, " outcome=allowed");
    let everything = format!("{:?}", logs.all());
    assert!(
        !everything.contains("203.0.113.7"),
        "the raw key never shows"
    );
}
