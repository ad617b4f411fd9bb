//! `lazy_connect`: `connect` returns without Redis, calls fail fast until
//! a background task has connected, then Redis decides.

mod support;

use std::time::{Duration, Instant};

use ratelimit_core::{ErrorChain, Limiter, Policy};
use ratelimit_redis::{ConnectErrorKind, RedisLimiter, RedisOptions};
use ratelimit_redis_harness::{free_port, RedisServer};
use ratelimit_testkit::Capture;
use tracing::Level;

use support::{fresh_prefix, runtime};

fn policy() -> Policy {
    Policy::fixed_window(5, Duration::from_secs(60)).unwrap()
}

#[test]
fn calls_fail_fast_until_redis_is_up_then_redis_decides() {
    let port = free_port();
    // One thread, so that the background task logs on this thread, whose
    // events the capture keeps.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (events, _guard) = Capture::install();
    let options = RedisOptions::standalone(format!("redis://127.0.0.1:{port}"))
        .with_prefix(fresh_prefix("lazy"))
        // A long timeout, so that failing fast (no waiting on the
        // connection) is told apart from failing at the timeout with a
        // wide margin on a loaded machine.
        .with_timeout(Duration::from_secs(10))
        .with_lazy_connect(true);
    let limiter = rt.block_on(async {
        let started = Instant::now();
        let limiter = RedisLimiter::connect(policy(), options).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "connect waited");
        assert!(!limiter.is_connected());
        // Give the background task time to fail a few times (100, 200,
        // 400 ms apart).
        tokio::time::sleep(Duration::from_millis(800)).await;
        for _ in 0..3 {
            let started = Instant::now();
            let err = limiter.check_one(b"k").await.unwrap_err();
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "waited for the timeout"
            );
            assert!(err.is_backend() && !err.is_timeout(), "{err:?}");
            let chain = ErrorChain(&err).to_string();
            assert!(
                chain.contains("Redis is not connected yet: Redis at redis://127.0.0.1:")
                    && chain.contains("cannot be reached"),
                "{chain}"
            );
        }
        assert!(limiter.peek(b"k").await.is_err() && limiter.reset(b"k").await.is_err());
        limiter
    });

    let server = RedisServer::start_on(port, &[]);
    rt.block_on(async {
        // The backoff is at most 5 s; a loaded machine gets slack.
        let deadline = Instant::now() + Duration::from_secs(20);
        let decision = loop {
            if let Ok(decision) = limiter.check_one(b"k").await {
                break decision;
            }
            assert!(Instant::now() < deadline, "never connected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(limiter.is_connected());
        assert_eq!(decision.remaining, 4);
        assert_eq!(limiter.check_one(b"k").await.unwrap().remaining, 3);
        let key = String::from_utf8(limiter.redis_key(b"k")).unwrap();
        assert_eq!(server.cli(&["EXISTS", &key]), "1");
    });
    let warnings = events.events(Level::WARN);
    assert_eq!(
        warnings.len(),
        1,
        "only the first failure warns: {warnings:?}"
    );
    assert!(
        warnings[0].contains("cannot connect to Redis yet"),
        "{warnings:?}"
    );
    assert!(
        events.events(Level::DEBUG).len() >= 2,
        "the later failures are DEBUG"
    );
    let infos = events.events(Level::INFO);
    assert_eq!(infos.len(), 1, "{infos:?}");
    assert!(infos[0].contains("connected to Redis"), "{infos:?}");
}

#[test]
fn a_bad_url_or_prefix_still_fails_connect() {
    let rt = runtime();
    for (options, needle) in [
        (
            RedisOptions::standalone("http://127.0.0.1:1"),
            "invalid Redis configuration",
        ),
        (
            RedisOptions::standalone("redis://127.0.0.1:1").with_prefix("a{b}"),
            "invalid `prefix`",
        ),
    ] {
        let err = rt
            .block_on(RedisLimiter::connect(
                policy(),
                options.with_lazy_connect(true),
            ))
            .unwrap_err();
        assert_eq!(err.kind(), ConnectErrorKind::InvalidConfig, "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
}
