//! The layers over a real `RedisLimiter` on a private `redis-server` that
//! is killed (or frozen) under them: each failure policy does what it
//! says, the breaker opens and probes, and the stack recovers on its own.
//!
//! Real time and a real server: waits are bounded loops, never sleeps
//! asserted on.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratelimit_core::{FailurePolicy, Limiter, ManualClock, Policy, ReferenceLimiter};
use ratelimit_layers::{
    BreakerOptions, BreakerState, CircuitBreaker, DenyCache, Failover, ResilienceConfig,
};
use ratelimit_redis::{RedisLimiter, RedisOptions};
use ratelimit_redis_harness::RedisServer;

const OPEN_FOR: Duration = Duration::from_millis(300);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime builds")
}

fn policy() -> Policy {
    Policy::token_bucket(3, 1, Duration::from_secs(3600)).unwrap()
}

async fn redis(server: &RedisServer) -> Arc<RedisLimiter> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let prefix = format!(
        "layers-{}-{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let options = RedisOptions::standalone(server.url())
        .with_prefix(prefix)
        .with_timeout(Duration::from_millis(200));
    Arc::new(RedisLimiter::connect(policy(), options).await.unwrap())
}

fn breaker() -> BreakerOptions {
    BreakerOptions::default()
        .with_failure_threshold(NonZeroU32::new(3).unwrap())
        .with_open_for(OPEN_FOR)
}

/// Checks until the store decides again; panics after 15 s.
async fn until_the_store_decides(limiter: &dyn Limiter, key: &[u8]) -> ratelimit_core::Decision {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let d = limiter.check_one(key).await.unwrap();
        if !d.is_degraded() {
            return d;
        }
        assert!(Instant::now() < deadline, "the store never decided again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn each_failure_policy_over_a_killed_or_frozen_redis() {
    let rt = runtime();
    for freeze in [false, true] {
        for failure in FailurePolicy::ALL {
            let mut server = RedisServer::start();
            rt.block_on(async {
                let config = ResilienceConfig::default()
                    .with_failure(failure)
                    .with_timeout(Some(Duration::from_millis(250)))
                    .unwrap()
                    .with_breaker(breaker());
                let limiter = config.wrap(redis(&server).await);
                let first = limiter.check_one(b"k").await.unwrap();
                assert_eq!((first.degraded, first.remaining), (None, 2));
                if freeze {
                    server.pause();
                } else {
                    server.stop();
                }
                // The fallback starts full and keeps its own count.
                let local = ReferenceLimiter::new(policy());
                for _ in 0..20 {
                    let d = limiter.check_one(b"k").await.unwrap();
                    assert_eq!(d.degraded, Some(failure), "frozen {freeze}");
                    match failure {
                        FailurePolicy::Closed => {
                            assert!(!d.allowed);
                            assert_eq!(d.retry_after, Some(OPEN_FOR));
                        }
                        FailurePolicy::Open => assert!(d.allowed && d.remaining == 3),
                        FailurePolicy::Fallback => {
                            let want = local.check_sync(b"k", 1).unwrap();
                            assert_eq!((d.allowed, d.remaining), (want.allowed, want.remaining));
                        }
                    }
                }
                assert!(
                    limiter.reset(b"k").await.is_err(),
                    "a reset cannot be decided"
                );
                if freeze {
                    server.resume();
                } else {
                    server.restart();
                }
                let after = until_the_store_decides(limiter.as_ref(), b"k").await;
                if freeze {
                    // A frozen server runs the calls it had read when it
                    // thaws: they may have taken their tokens (see
                    // docs/semantics.md).
                    assert!(after.remaining <= 1, "{after:?}");
                } else {
                    assert_eq!(after.remaining, 2, "a restarted server starts empty");
                }
            });
            drop(server);
        }
    }
}

#[test]
fn the_breaker_opens_on_a_dead_redis_and_a_probe_closes_it() {
    let mut server = RedisServer::start();
    runtime().block_on(async {
        let limiter = Failover::new(
            CircuitBreaker::new(redis(&server).await, breaker()),
            FailurePolicy::Closed,
        );
        assert!(!limiter.check_one(b"k").await.unwrap().is_degraded());
        server.stop();
        for _ in 0..10 {
            assert!(limiter.check_one(b"k").await.unwrap().is_degraded());
        }
        assert_eq!(limiter.inner().state(), BreakerState::Open);
        let why = limiter.last_error().unwrap();
        assert!(why.starts_with("rate-limit backend failed: "), "{why}");

        server.restart();
        until_the_store_decides(&limiter, b"k").await;
        assert_eq!(limiter.inner().state(), BreakerState::Closed);
        assert!(!limiter.is_degraded());
    });
}

/// A given fallback limiter is the one asked, on the limiter's own clock.
#[test]
fn a_custom_fallback_is_used() {
    let mut server = RedisServer::start();
    runtime().block_on(async {
        let clock = ManualClock::new(1_700_000_000_000_000);
        let local = Arc::new(ReferenceLimiter::with_clock(policy(), clock));
        let limiter = ResilienceConfig::default()
            .with_failure(FailurePolicy::Fallback)
            .wrap_with_fallback(redis(&server).await, Arc::clone(&local) as Arc<dyn Limiter>);
        server.stop();
        let d = limiter.check_one(b"k").await.unwrap();
        assert_eq!(d.degraded, Some(FailurePolicy::Fallback));
        assert_eq!(
            local.peek_sync(b"k").remaining,
            2,
            "the custom limiter counted"
        );
    });
}

/// The deny cache over Redis answers a repeated denial locally and never
/// admits what Redis would deny.
#[test]
fn the_deny_cache_over_redis_only_denies() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let clock = ManualClock::new(1_700_000_000_000_000);
        let options = RedisOptions::standalone(server.url())
            .with_prefix(format!("layers-cache-{}:", std::process::id()))
            .with_clock(clock.clone());
        let store = RedisLimiter::connect(policy(), options).await.unwrap();
        let key = String::from_utf8(store.redis_key(b"k")).unwrap();
        let limiter =
            DenyCache::new(store, NonZeroUsize::new(8).unwrap()).with_clock(clock.clone());
        assert!(limiter.check(b"k", 3).await.unwrap().allowed);
        let _ = server.cli(&["CONFIG", "RESETSTAT"]);
        let first = limiter.check_one(b"k").await.unwrap();
        assert!(!first.allowed);
        let again = limiter.check_one(b"k").await.unwrap();
        assert_eq!(again, first, "the same instant: the same denial");
        // The limiter's calls: FCALLs (EVALSHAs where functions are off).
        let calls = ["fcall", "evalsha"]
            .map(|c| server.command_stat(c, "calls").unwrap_or(0.0))
            .iter()
            .sum::<f64>();
        assert_eq!(calls, 1.0, "the repeat was answered locally");
        // Once retry_after has passed, Redis decides again, and allows.
        clock.advance(first.retry_after.unwrap());
        assert!(limiter.check_one(b"k").await.unwrap().allowed);
        assert_eq!(server.cli(&["EXISTS", &key]), "1");
    });
}
