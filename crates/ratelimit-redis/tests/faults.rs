//! Redis failing under a live limiter: stopped, frozen, restarted, its
//! scripts flushed. Each failure policy does what it says, no call waits
//! much past its timeout, and the same limiter recovers on its own.
//!
//! Timing assertions are generous upper bounds that prove "no hang" only.

mod support;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratelimit_core::{Limiter, ManualClock, Policy, ReferenceLimiter};
use ratelimit_redis::{
    BreakerOptions, ConnectionMode, FailurePolicy, Outcome, RedisLimiter, RedisOptions, Source,
};
use ratelimit_redis_harness::RedisServer;

use support::{fresh_prefix, runtime};

const TIMEOUT: Duration = Duration::from_millis(200);
/// What "returns within its timeout" means on a loaded two-core machine.
const NO_HANG: Duration = Duration::from_secs(3);

fn policy() -> Policy {
    Policy::token_bucket(3, 1, Duration::from_secs(3600)).unwrap()
}

fn options(server: &RedisServer, failure: FailurePolicy, mode: ConnectionMode) -> RedisOptions {
    RedisOptions::standalone(server.url())
        .with_prefix(fresh_prefix("faults"))
        .with_timeout(TIMEOUT)
        .with_failure_policy(failure)
        .with_connection_mode(mode)
        .with_breaker(BreakerOptions::new(
            NonZeroU32::new(3).unwrap(),
            Duration::from_millis(300),
        ))
}

async fn timed_check(limiter: &RedisLimiter, key: &[u8]) -> Outcome {
    let started = Instant::now();
    let outcome = limiter.check_detailed(key, 1).await.unwrap();
    assert!(
        started.elapsed() < NO_HANG,
        "a call with a {TIMEOUT:?} timeout took {:?}",
        started.elapsed()
    );
    outcome
}

/// Checks until Redis decides again; panics after 15 s.
async fn until_redis_decides(limiter: &RedisLimiter, key: &[u8]) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let outcome = timed_check(limiter, key).await;
        if outcome.source == Source::Redis {
            return outcome;
        }
        assert!(Instant::now() < deadline, "Redis never decided again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stopping Redis (killed, or frozen with its connections open) under each
/// failure policy and connection mode.
#[test]
fn failure_policies_when_redis_stops_or_hangs() {
    let rt = runtime();
    for mode in [ConnectionMode::Multiplexed, ConnectionMode::Pool] {
        for freeze in [false, true] {
            for failure in [
                FailurePolicy::FailClosed,
                FailurePolicy::FailOpen,
                FailurePolicy::Fallback,
            ] {
                let mut server = RedisServer::start();
                rt.block_on(async {
                    let limiter = RedisLimiter::connect(policy(), options(&server, failure, mode))
                        .await
                        .unwrap();
                    let first = timed_check(&limiter, b"k").await;
                    assert_eq!(first.source, Source::Redis);
                    if freeze {
                        server.pause();
                    } else {
                        server.stop();
                    }
                    let reference = ReferenceLimiter::new(policy());
                    let started = Instant::now();
                    for _ in 0..40 {
                        let outcome = timed_check(&limiter, b"k").await;
                        let d = outcome.decision;
                        match failure {
                            FailurePolicy::FailClosed => {
                                assert_eq!(outcome.source, Source::FailClosed);
                                assert!(!d.allowed);
                            }
                            FailurePolicy::FailOpen => {
                                assert_eq!(outcome.source, Source::FailOpen);
                                assert!(d.allowed);
                            }
                            _ => {
                                assert_eq!(outcome.source, Source::Fallback);
                                // The local limiter starts full and keeps count.
                                let want = reference.check_sync(b"k", 1).unwrap();
                                assert_eq!(d.allowed, want.allowed);
                                assert_eq!(d.remaining, want.remaining);
                            }
                        }
                    }
                    // 40 calls of 200 ms each would take 8 s; the breaker
                    // stops waiting after three failures.
                    assert!(
                        started.elapsed() < Duration::from_secs(4),
                        "the breaker did not stop the waiting: {:?}",
                        started.elapsed()
                    );
                    assert!(limiter.is_degraded());
                    assert!(limiter.last_error().is_some());
                    assert!(limiter.degraded_decisions() >= 40);
                    assert!(limiter.reset(b"k").await.is_err(), "a reset cannot succeed");
                });
                if freeze {
                    server.resume();
                    drop(server);
                }
            }
        }
    }
}

/// A restarted Redis (empty, no scripts loaded) is used again by the same
/// limiter: it reconnects and reloads its script, on the lean connection of
/// lone requests, on the multiplexed connection (batching off) and on a
/// pool.
#[test]
fn recovers_after_a_restart() {
    let rt = runtime();
    for (mode, max_batch) in [
        (ConnectionMode::Multiplexed, 128),
        (ConnectionMode::Multiplexed, 1),
        (ConnectionMode::Pool, 128),
    ] {
        let mut server = RedisServer::start();
        rt.block_on(async {
            let options = options(&server, FailurePolicy::FailClosed, mode)
                .with_max_batch(std::num::NonZeroUsize::new(max_batch).unwrap());
            let limiter = RedisLimiter::connect(policy(), options).await.unwrap();
            assert_eq!(timed_check(&limiter, b"k").await.decision.remaining, 2);
            server.restart();
            let after = until_redis_decides(&limiter, b"k").await;
            assert_eq!(after.decision.remaining, 2, "a fresh server starts full");
            assert!(!limiter.is_degraded());
        });
    }
}

/// A frozen Redis that thaws is used again.
#[test]
fn recovers_after_a_hang() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let limiter = RedisLimiter::connect(
            policy(),
            options(
                &server,
                FailurePolicy::FailOpen,
                ConnectionMode::Multiplexed,
            ),
        )
        .await
        .unwrap();
        timed_check(&limiter, b"k").await;
        server.pause();
        for _ in 0..5 {
            assert!(timed_check(&limiter, b"k").await.is_degraded());
        }
        server.resume();
        let after = until_redis_decides(&limiter, b"k").await;
        // The calls that timed out had been sent: the thawed server runs
        // them late, so they may have taken their tokens (as any request
        // that times out after it was sent may). At least the two checks
        // Redis answered did.
        assert!(after.decision.remaining <= 1, "{after:?}");
    });
}

/// After `SCRIPT FLUSH` the next call reloads the script itself: no failed
/// call at all, on the lean connection of lone requests (batching on) and
/// on the multiplexed one (batching off).
#[test]
fn recovers_after_script_flush() {
    let server = RedisServer::start();
    runtime().block_on(async {
        for max_batch in [128, 1] {
            let options = options(
                &server,
                FailurePolicy::FailClosed,
                ConnectionMode::Multiplexed,
            )
            .with_max_batch(std::num::NonZeroUsize::new(max_batch).unwrap());
            let limiter = RedisLimiter::connect(policy(), options).await.unwrap();
            assert_eq!(timed_check(&limiter, b"k").await.source, Source::Redis);
            assert_eq!(server.cli(&["SCRIPT", "FLUSH"]), "OK");
            let after = timed_check(&limiter, b"k").await;
            assert_eq!(after.source, Source::Redis, "max_batch {max_batch}");
            assert_eq!(after.decision.remaining, 1);
            assert_eq!(limiter.degraded_decisions(), 0);
        }
    });
}

/// The fallback limiter can be replaced (e.g. by the memory backend), and
/// is used with the limiter's own clock.
#[test]
fn custom_fallback_limiter_is_used() {
    let mut server = RedisServer::start();
    runtime().block_on(async {
        let clock = ManualClock::new(1_700_000_000_000_000);
        let local = Arc::new(ReferenceLimiter::with_clock(policy(), clock.clone()));
        let options = options(
            &server,
            FailurePolicy::Fallback,
            ConnectionMode::Multiplexed,
        )
        .with_clock(clock.clone())
        .with_fallback_limiter(Arc::clone(&local) as Arc<dyn Limiter>);
        let limiter = RedisLimiter::connect(policy(), options).await.unwrap();
        server.stop();
        let d = timed_check(&limiter, b"k").await;
        assert_eq!(d.source, Source::Fallback);
        assert_eq!(
            local.peek_sync(b"k").remaining,
            2,
            "the custom limiter counted"
        );
    });
}
