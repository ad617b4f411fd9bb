//! The conformance suite and the differential model test against a private
//! standalone `redis-server`, through both connection modes.

mod support;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use ratelimit_conformance::differential::check_against_model;
use ratelimit_conformance::scenarios::run_all;
use ratelimit_conformance::strategy::awkward_keys;
use ratelimit_core::{Algorithm, ErrorChain, Limiter, ManualClock, Policy};
use ratelimit_redis::{ConnectionMode, RedisLimiter, RedisOptions, Target};
use ratelimit_redis_harness::RedisServer;

use support::{fresh_prefix, make, options, runtime};

#[test]
fn conformance_scenarios_pass_multiplexed() {
    let server = RedisServer::start();
    let target = Target::Standalone(server.url());
    runtime()
        .block_on(run_all(|policy, clock| {
            make(target.clone(), ConnectionMode::Multiplexed, policy, clock)
        }))
        .unwrap();
}

#[test]
fn conformance_scenarios_pass_pooled() {
    let server = RedisServer::start();
    let target = Target::Standalone(server.url());
    runtime()
        .block_on(run_all(|policy, clock| {
            make(target.clone(), ConnectionMode::Pool, policy, clock)
        }))
        .unwrap();
}

/// The script path (`EVALSHA`), which a server without Redis functions
/// takes.
#[test]
fn conformance_scenarios_pass_as_a_script() {
    let server = RedisServer::start();
    let target = Target::Standalone(server.url());
    runtime()
        .block_on(run_all(|policy, clock| {
            let options = options(&target, &clock, policy.algorithm_name()).with_functions(false);
            async move {
                Arc::new(
                    RedisLimiter::connect(policy, options)
                        .await
                        .expect("connect"),
                ) as Arc<dyn ratelimit_core::Limiter>
            }
        }))
        .unwrap();
}

/// One server for all proptest cases of this binary. It lives in a static,
/// which is never dropped, so it is stopped by the last test that uses it
/// instead (see `differential_matches_the_model`).
fn shared_server() -> &'static std::sync::Mutex<Option<RedisServer>> {
    static SERVER: OnceLock<std::sync::Mutex<Option<RedisServer>>> = OnceLock::new();
    SERVER.get_or_init(|| std::sync::Mutex::new(Some(RedisServer::start())))
}

fn shared_url() -> String {
    shared_server()
        .lock()
        .unwrap()
        .as_ref()
        .expect("the shared server is running")
        .url()
}

#[test]
fn differential_matches_the_model() {
    let url = shared_url();
    let rt = runtime();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 128,
        // Failing cases are kept (and replayed first) like the
        // `proptest!` macro's regressions files.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "tests/standalone.proptest-regressions",
            ),
        )),
        ..ProptestConfig::default()
    });
    let strategy = support::differential_cases();
    let result = runner.run(&strategy, |(policy, start, steps)| {
        let clock = ManualClock::new(start);
        let target = Target::Standalone(url.clone());
        let outcome = rt.block_on(async {
            let limiter = RedisLimiter::connect(policy, options(&target, &clock, "diff"))
                .await
                .expect("connect");
            check_against_model(&limiter, &clock, &policy, &awkward_keys(), start, &steps).await
        });
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
        Ok(())
    });
    // Stop the shared server now: statics are never dropped.
    shared_server().lock().unwrap().take();
    result.unwrap();
}

/// Values near the top of the exact domain: the largest limit with a 1 ms
/// window and timestamps near 2^52, where a naive Lua division rounds.
#[test]
fn extreme_values_match_the_model() {
    let server = RedisServer::start();
    let rt = runtime();
    let top = ratelimit_core::MAX_TIMESTAMP_US - 1;
    let policies = [
        Policy::fixed_window(u64::from(u32::MAX), Duration::from_millis(1)).unwrap(),
        Policy::sliding_window(u64::from(u32::MAX), Duration::from_millis(2_097_151)).unwrap(),
        Policy::sliding_window(3, Duration::from_millis(7)).unwrap(),
        Policy::token_bucket(u64::from(u32::MAX), 1, Duration::from_millis(1)).unwrap(),
        Policy::token_bucket(7, 3, Duration::from_millis(1000)).unwrap(),
    ];
    rt.block_on(async {
        for policy in policies {
            for start in [0, 999, top - 10_000_000, top - 3] {
                let clock = ManualClock::new(start);
                let target = Target::Standalone(server.url());
                let limiter = RedisLimiter::connect(policy, options(&target, &clock, "edge"))
                    .await
                    .unwrap();
                let mut state = Default::default();
                let costs = [1, policy.limit(), policy.limit() / 2 + 1, 1, 2];
                for (i, cost) in costs.into_iter().enumerate() {
                    let now = start + i as u64 * 1_234;
                    clock.set(now);
                    let (want, next) = policy.check(&state, now, cost).unwrap();
                    let got = limiter.check(b"edge", cost).await.unwrap();
                    assert_eq!(got, want, "{policy:?} at {now}, cost {cost}");
                    if want.allowed {
                        state = next;
                    }
                    assert_eq!(
                        limiter.peek(b"edge").await.unwrap(),
                        policy.peek(&state, now)
                    );
                }
            }
        }
    });
}

/// Server time: keys get a TTL at the state's expiry, denials write
/// nothing, and reset deletes exactly one key.
#[test]
fn server_time_ttl_and_reset() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let policy = Policy::fixed_window(2, Duration::from_secs(60)).unwrap();
        let options = RedisOptions::standalone(server.url()).with_prefix(fresh_prefix("ttl"));
        let limiter = RedisLimiter::connect(policy, options).await.unwrap();
        assert!(limiter.check(b"a", 2).await.unwrap().allowed);
        assert!(limiter.check(b"b", 1).await.unwrap().allowed);
        let key = String::from_utf8(limiter.redis_key(b"a")).unwrap();
        let ttl: i64 = server.cli(&["PTTL", &key]).parse().unwrap();
        assert!(ttl > 0 && ttl <= 60_000, "TTL {ttl} ms");
        let at: i64 = server.cli(&["PEXPIRETIME", &key]).parse().unwrap();
        assert_eq!(at % 60_000, 0, "expires exactly at the window's end");

        let denied = limiter.check(b"a", 1).await.unwrap();
        assert!(!denied.allowed);
        assert!(denied.retry_after.unwrap() <= Duration::from_secs(60));
        let ttl_after: i64 = server.cli(&["PEXPIRETIME", &key]).parse().unwrap();
        assert_eq!(ttl_after, at, "a denial writes nothing");

        limiter.reset(b"a").await.unwrap();
        assert_eq!(server.cli(&["EXISTS", &key]), "0");
        let other = String::from_utf8(limiter.redis_key(b"b")).unwrap();
        assert_eq!(server.cli(&["EXISTS", &other]), "1", "only that key");
        assert_eq!(limiter.peek(b"a").await.unwrap().remaining, 2);
    });
}

/// On server time a key expires exactly when its state would be a key
/// never seen, also after later writes in the same window (which keep the
/// key's expiry) and after the window rolls.
#[test]
fn server_time_expiry_follows_each_write() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let window = Duration::from_secs(3600);
        for policy in [
            Policy::fixed_window(10, window).unwrap(),
            Policy::sliding_window(10, window).unwrap(),
            Policy::token_bucket(10, 1, Duration::from_secs(60)).unwrap(),
        ] {
            let options = RedisOptions::standalone(server.url()).with_prefix(fresh_prefix("exp"));
            let limiter = RedisLimiter::connect(policy, options).await.unwrap();
            let key = String::from_utf8(limiter.redis_key(b"k")).unwrap();
            let mut expiries = Vec::new();
            for _ in 0..3 {
                assert!(limiter.check(b"k", 1).await.unwrap().allowed);
                let at: u64 = server.cli(&["PEXPIRETIME", &key]).parse().unwrap();
                expiries.push(at);
            }
            let hour = 3_600_000;
            match policy {
                // The end of the window (or of the one after it), whatever
                // the write: a window cannot roll during the test but at an
                // hour's turn, when the expiry moves to the next one.
                Policy::FixedWindow(_) | Policy::SlidingWindow(_) => {
                    assert!(expiries.iter().all(|at| at % hour == 0), "{expiries:?}");
                }
                // Each token moves the bucket's full instant by 60 s.
                _ => {
                    assert!(
                        (expiries[2] - expiries[0]).abs_diff(120_000) < 1_000,
                        "{expiries:?}"
                    );
                }
            }
            assert!(expiries.windows(2).all(|w| w[0] <= w[1]), "{expiries:?}");
        }
    });
}

/// On server time a token bucket's key expires at the first whole second
/// at or after the bucket is full again: tokens taken within that second
/// keep the key's expiry, a token moving it past the second moves it.
#[test]
fn server_time_token_bucket_expiry_is_the_next_whole_second() {
    let server = RedisServer::start();
    runtime().block_on(async {
        // 1 ms per token: each check of 300 tokens moves the full instant by
        // 300 ms, so six of them cross one or two whole seconds and stay
        // within one at least three times.
        let policy = Policy::token_bucket(2_000, 1_000, Duration::from_secs(1)).unwrap();
        let options = RedisOptions::standalone(server.url()).with_prefix(fresh_prefix("tbexp"));
        let limiter = RedisLimiter::connect(policy, options).await.unwrap();
        let key = String::from_utf8(limiter.redis_key(b"k")).unwrap();
        let wall_us = || {
            u64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_micros(),
            )
            .unwrap()
        };
        let mut expiries = Vec::new();
        for _ in 0..6 {
            let before = wall_us();
            let d = limiter.check(b"k", 300).await.unwrap();
            let after = wall_us();
            assert!(d.allowed);
            let reset_after = u64::try_from(d.reset_after.as_micros()).unwrap();
            let at_ms: u64 = server.cli(&["PEXPIRETIME", &key]).parse().unwrap();
            assert_eq!(at_ms % 1_000, 0, "a whole second: {at_ms}");
            // The server's TIME and this process read the same host clock:
            // the bucket is full again at server-now + reset_after.
            let at = at_ms * 1_000;
            assert!(
                at >= before + reset_after,
                "expires before the bucket is full"
            );
            assert!(
                at < after + reset_after + 1_000_000,
                "more than a second late"
            );
            expiries.push(at_ms);
        }
        let kept = expiries.windows(2).filter(|w| w[0] == w[1]).count();
        assert!((3..5).contains(&kept), "{expiries:?}");
    });
}

/// A key holding a value of another type, or a string of another shape,
/// fails its own request, also in a call of its own (no batching), with an
/// error that says why, and the value is left alone.
#[test]
fn a_foreign_value_fails_its_request_alone() {
    let server = RedisServer::start();
    runtime().block_on(async {
        for policy in [
            Policy::fixed_window(10, Duration::from_secs(60)).unwrap(),
            Policy::sliding_window(10, Duration::from_secs(60)).unwrap(),
            Policy::token_bucket(10, 1, Duration::from_secs(1)).unwrap(),
        ] {
            let options = RedisOptions::standalone(server.url())
                .with_prefix(fresh_prefix("alien"))
                .with_max_batch(std::num::NonZeroUsize::new(1).unwrap());
            let limiter = RedisLimiter::connect(policy, options).await.unwrap();
            // Limiter keys are often client addresses: errors end up in log
            // lines, so they never carry one.
            let (hash_key, text_key) = (&b"198.51.100.7"[..], &b"198.51.100.8"[..]);
            let hash = String::from_utf8(limiter.redis_key(hash_key)).unwrap();
            let text = String::from_utf8(limiter.redis_key(text_key)).unwrap();
            let _ = server.cli(&["HSET", &hash, "field", "1"]);
            let _ = server.cli(&["SET", &text, "not a state"]);
            for (key, why) in [(hash_key, "WRONGTYPE"), (text_key, "a string of 11 bytes")] {
                let checked = limiter.check_one(key).await.unwrap_err();
                let peeked = limiter.peek(key).await.unwrap_err();
                for err in [checked, peeked] {
                    assert!(err.is_data(), "{policy:?}: {err:?}");
                    let chain = ErrorChain(&err).to_string();
                    assert!(chain.contains(why), "{chain}");
                    assert!(chain.contains("a key holds a value this script did not write"));
                    assert!(!chain.contains("198.51.100."), "the key is in {chain:?}");
                }
            }
            assert_eq!(server.cli(&["GET", &text]), "not a state", "left as it was");
            assert_eq!(server.cli(&["HGET", &hash, "field"]), "1");
            let fine = limiter.check_one(b"fine").await.unwrap();
            assert_eq!(fine.remaining, 9, "the other keys are decided as ever");
        }
    });
}

/// The user, password and database of the URL hold for every call: lone
/// requests (which go at once) and concurrent ones (batched) alike.
#[test]
fn credentials_and_database_from_the_url_hold_for_every_call() {
    let server = RedisServer::start_with(&["--user", "alice", "on", ">pw", "~*", "&*", "+@all"]);
    let port = server.port();
    runtime().block_on(async {
        let policy = Policy::fixed_window(100, Duration::from_secs(60)).unwrap();
        let url = format!("redis://alice:pw@127.0.0.1:{port}/3");
        let options = RedisOptions::standalone(url).with_prefix(fresh_prefix("acl"));
        let limiter = Arc::new(RedisLimiter::connect(policy, options).await.unwrap());
        for _ in 0..3 {
            assert!(limiter.check_one(b"lone").await.unwrap().allowed);
        }
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                tokio::spawn(async move { limiter.check_one(b"many").await })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().expect("Redis decided").allowed);
        }
        let lone = String::from_utf8(limiter.redis_key(b"lone")).unwrap();
        let many = String::from_utf8(limiter.redis_key(b"many")).unwrap();
        for key in [&lone, &many] {
            assert_eq!(
                server.cli(&["-n", "3", "EXISTS", key]),
                "1",
                "{key} in db 3"
            );
            assert_eq!(server.cli(&["EXISTS", key]), "0", "{key} not in db 0");
        }
        assert_eq!(limiter.peek(b"lone").await.unwrap().remaining, 97);
        assert_eq!(limiter.peek(b"many").await.unwrap().remaining, 68);
        // Every connection of the limiter logged in as alice (the only
        // other client is redis-cli, listing them).
        let clients = server.cli(&["CLIENT", "LIST"]);
        let users: Vec<&str> = clients
            .lines()
            .filter(|l| !l.contains("cmd=client"))
            .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("user=")))
            .collect();
        assert!(
            !users.is_empty() && users.iter().all(|u| *u == "alice"),
            "{clients}"
        );
    });
}

/// Awkward keys land in distinct Redis keys; each carries a TTL.
#[test]
fn awkward_keys_are_distinct_redis_keys_with_ttls() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let clock = ManualClock::new(1_700_000_000_000_000);
        let target = Target::Standalone(server.url());
        for policy in ratelimit_conformance::scenarios::sample_policies() {
            let limiter = RedisLimiter::connect(policy, options(&target, &clock, "awk"))
                .await
                .unwrap();
            for key in awkward_keys() {
                assert!(limiter.check(&key, 1).await.unwrap().allowed);
            }
        }
        let keys = awkward_keys().len() * 3;
        assert_eq!(server.cli(&["DBSIZE"]), keys.to_string());
        assert_eq!(
            server.cli(&["EVAL", "local n = 0 for _, k in ipairs(redis.call('KEYS', '*')) do if redis.call('PTTL', k) > 0 then n = n + 1 end end return n", "0"]),
            keys.to_string(),
            "every key has a TTL"
        );
    });
}

/// Limiters with separate connections (and separate pools) sharing one
/// Redis never admit more than the limit in total. They share a manual
/// clock, so the window cannot turn during the test: exactly the limit
/// passes.
#[test]
fn separate_limiters_share_one_limit() {
    let server = RedisServer::start();
    let rt = runtime();
    rt.block_on(async {
        let prefix = fresh_prefix("shared");
        let clock = ManualClock::new(1_700_000_000_000_000);
        let policy = Policy::sliding_window(100, Duration::from_secs(60)).unwrap();
        let mut limiters = Vec::new();
        for i in 0..4 {
            let mode = if i % 2 == 0 {
                ConnectionMode::Multiplexed
            } else {
                ConnectionMode::Pool
            };
            let options = RedisOptions::standalone(server.url())
                .with_prefix(prefix.clone())
                .with_timeout(Duration::from_secs(2))
                .with_clock(clock.clone())
                .with_connection_mode(mode);
            limiters.push(Arc::new(
                RedisLimiter::connect(policy, options).await.unwrap(),
            ));
        }
        let mut tasks = Vec::new();
        for limiter in &limiters {
            for _ in 0..8 {
                let limiter = Arc::clone(limiter);
                tasks.push(tokio::spawn(async move {
                    let mut allowed = 0u64;
                    for _ in 0..20 {
                        let d = limiter.check_one(b"shared").await.unwrap();
                        allowed += u64::from(d.allowed);
                    }
                    allowed
                }));
            }
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        assert_eq!(total, 100, "640 attempts on 4 limiters, a limit of 100");
    });
}
