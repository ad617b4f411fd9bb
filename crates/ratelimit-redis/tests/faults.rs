//! Redis failing under a live limiter: stopped, frozen, restarted, its
//! scripts flushed. Every call fails with an error (never a made-up
//! decision), no call waits much past its timeout, and the same limiter
//! recovers on its own.
//!
//! Timing assertions are generous upper bounds that prove "no hang" only.

mod support;

use std::time::{Duration, Instant};

use ratelimit_core::{Decision, Error, Limiter, Policy};
use ratelimit_redis::{ConnectionMode, RedisLimiter, RedisOptions};
use ratelimit_redis_harness::RedisServer;

use support::{fresh_prefix, runtime};

const TIMEOUT: Duration = Duration::from_millis(200);
/// What "returns within its timeout" means on a loaded two-core machine.
const NO_HANG: Duration = Duration::from_secs(3);

fn policy() -> Policy {
    Policy::token_bucket(3, 1, Duration::from_secs(3600)).unwrap()
}

fn options(server: &RedisServer, mode: ConnectionMode) -> RedisOptions {
    RedisOptions::standalone(server.url())
        .with_prefix(fresh_prefix("faults"))
        .with_timeout(TIMEOUT)
        .with_connection_mode(mode)
}

async fn timed_check(limiter: &RedisLimiter, key: &[u8]) -> Result<Decision, Error> {
    let started = Instant::now();
    let outcome = limiter.check_one(key).await;
    assert!(
        started.elapsed() < NO_HANG,
        "a call with a {TIMEOUT:?} timeout took {:?}",
        started.elapsed()
    );
    outcome
}

/// Checks until Redis decides again; panics after 15 s.
async fn until_redis_decides(limiter: &RedisLimiter, key: &[u8]) -> Decision {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(decision) = timed_check(limiter, key).await {
            return decision;
        }
        assert!(Instant::now() < deadline, "Redis never decided again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stopping Redis (killed, or frozen with its connections open) under each
/// connection mode: every call returns an error within its timeout, never
/// a decision made up in Redis's place. (What to do instead is the
/// resilience layers' job: see `ratelimit-layers`' tests over a killed
/// server.)
#[test]
fn outages_are_errors_when_redis_stops_or_hangs() {
    let rt = runtime();
    for mode in [ConnectionMode::Multiplexed, ConnectionMode::Pool] {
        for freeze in [false, true] {
            let mut server = RedisServer::start();
            rt.block_on(async {
                let limiter = RedisLimiter::connect(policy(), options(&server, mode))
                    .await
                    .unwrap();
                assert_eq!(timed_check(&limiter, b"k").await.unwrap().remaining, 2);
                if freeze {
                    server.pause();
                } else {
                    server.stop();
                }
                for _ in 0..5 {
                    let err = timed_check(&limiter, b"k").await.unwrap_err();
                    assert!(err.is_backend(), "{mode:?}, frozen {freeze}: {err:?}");
                    if freeze && mode == ConnectionMode::Multiplexed {
                        assert!(err.is_timeout(), "{err:?}");
                    }
                }
                assert!(limiter.peek(b"k").await.unwrap_err().is_backend());
                assert!(limiter.reset(b"k").await.unwrap_err().is_backend());
            });
            if freeze {
                server.resume();
                drop(server);
            }
        }
    }
}

/// A restarted Redis (empty, no scripts loaded) is used again by the same
/// limiter: it reconnects and reloads its script, on the multiplexed
/// connection (batching on and off) and on a pool.
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
            let options = options(&server, mode)
                .with_max_batch(std::num::NonZeroUsize::new(max_batch).unwrap());
            let limiter = RedisLimiter::connect(policy(), options).await.unwrap();
            assert_eq!(timed_check(&limiter, b"k").await.unwrap().remaining, 2);
            server.restart();
            let after = until_redis_decides(&limiter, b"k").await;
            assert_eq!(after.remaining, 2, "a fresh server starts full");
        });
    }
}

/// A frozen Redis that thaws is used again.
#[test]
fn recovers_after_a_hang() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let limiter =
            RedisLimiter::connect(policy(), options(&server, ConnectionMode::Multiplexed))
                .await
                .unwrap();
        timed_check(&limiter, b"k").await.unwrap();
        server.pause();
        for _ in 0..5 {
            assert!(timed_check(&limiter, b"k").await.unwrap_err().is_timeout());
        }
        server.resume();
        let after = until_redis_decides(&limiter, b"k").await;
        // The calls that timed out had been sent: the thawed server runs
        // them late, so they may have taken their tokens (as any request
        // that times out after it was sent may). At least the two checks
        // Redis answered did.
        assert!(after.remaining <= 1, "{after:?}");
    });
}

/// After `SCRIPT FLUSH` the next call reloads the script itself: no failed
/// call at all, batching on and off.
#[test]
fn recovers_after_script_flush() {
    let server = RedisServer::start();
    runtime().block_on(async {
        for max_batch in [128, 1] {
            let options = options(&server, ConnectionMode::Multiplexed)
                .with_max_batch(std::num::NonZeroUsize::new(max_batch).unwrap());
            let limiter = RedisLimiter::connect(policy(), options).await.unwrap();
            assert_eq!(timed_check(&limiter, b"k").await.unwrap().remaining, 2);
            assert_eq!(server.cli(&["SCRIPT", "FLUSH"]), "OK");
            let after = timed_check(&limiter, b"k").await;
            assert_eq!(after.unwrap().remaining, 1, "max_batch {max_batch}");
        }
    });
}
