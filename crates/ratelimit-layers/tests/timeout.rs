//! `Timeout` against the reference limiter and a store that hangs.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{ErrorChain, Limiter, ManualClock};
use ratelimit_layers::Timeout;
use support::{policy, Scripted};

#[tokio::test(start_paused = true)]
async fn every_call_gives_up_after_the_timeout() {
    let store = Scripted::new(policy(), ManualClock::new(0));
    let limiter = Timeout::new(Arc::clone(&store), Duration::from_millis(200)).unwrap();
    assert_eq!(limiter.check_one(b"k").await.unwrap().remaining, 2);

    store.hang(true);
    let started = tokio::time::Instant::now();
    let err = limiter.check_one(b"k").await.unwrap_err();
    // Paused time jumps straight to the timer: exactly the timeout passed.
    assert_eq!(started.elapsed(), Duration::from_millis(200));
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(
        ErrorChain(&err).to_string(),
        "rate-limit backend timed out: no answer within 200ms"
    );
    assert!(limiter.peek(b"k").await.unwrap_err().is_timeout());
    assert!(limiter.reset(b"k").await.unwrap_err().is_timeout());

    store.hang(false);
    assert_eq!(
        limiter.check_one(b"k").await.unwrap().remaining,
        1,
        "the timed-out calls never reached the store's state"
    );
}

#[tokio::test(start_paused = true)]
async fn works_over_a_shared_dyn_limiter_and_passes_errors_through() {
    let store = Scripted::new(policy(), ManualClock::new(0));
    let shared: Arc<dyn Limiter> = store.clone();
    let limiter = Timeout::new(shared, Duration::from_secs(1)).unwrap();
    assert_eq!(limiter.policies(), store.policies());
    store.fail_next(1);
    let err = limiter.check_one(b"k").await.unwrap_err();
    assert!(err.is_backend() && !err.is_timeout(), "{err:?}");
    assert!(limiter.check(b"k", 4).await.unwrap_err().is_cost_rejected());
}

#[test]
fn a_zero_timeout_is_refused() {
    let store = Scripted::new(policy(), ManualClock::new(0));
    let err = Timeout::new(store, Duration::ZERO).unwrap_err();
    assert_eq!(err.field(), "timeout");
    assert!(
        err.to_string().contains("must be longer than zero"),
        "{err}"
    );
}
