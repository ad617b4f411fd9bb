//! Batching on a multiplexed connection to a private `redis-server`:
//! requests made while a call is in flight go together in the next call,
//! and are decided exactly as if each had a call of its own, in the order
//! they were made.
//!
//! Each test freezes the server (SIGSTOP) while it makes its requests, so
//! that the first call stays in flight and the others queue behind it
//! whatever the machine's speed, then thaws it.
//!
//! These prove the real thing: the script deciding whole batches, the
//! calls shared on a real connection. The batcher's own rules (the order
//! of calls, the lone call, each request's deadline, failures) are tested
//! on a scripted transport and a paused clock, in `src/batch/tests.rs`.

mod support;

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use proptest::prelude::*;
use ratelimit_conformance::strategy::small_policy;
use ratelimit_core::{
    Algorithm, Decision, Error, ErrorChain, Limiter, ManualClock, Policy, PolicyState,
};
use ratelimit_redis::{RedisLimiter, RedisOptions, Target};
use ratelimit_redis_harness::RedisServer;

use support::{options, runtime};

type Outcome = Result<Decision, Error>;
type Pending<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// Runs `requests` concurrently, polling each once in the order given
/// first (so they queue in that order) while the server is frozen.
async fn frozen_then_thawed(server: &RedisServer, mut requests: Vec<Pending<'_>>) -> Vec<Outcome> {
    server.pause();
    let mut outcomes: Vec<Option<Outcome>> = std::iter::repeat_with(|| None)
        .take(requests.len())
        .collect();
    std::future::poll_fn(|cx| {
        for (request, outcome) in requests.iter_mut().zip(&mut outcomes) {
            if let Poll::Ready(o) = request.as_mut().poll(cx) {
                *outcome = Some(o);
            }
        }
        Poll::Ready(())
    })
    .await;
    // Let the batching task take what is queued while the server sleeps.
    tokio::time::sleep(Duration::from_millis(20)).await;
    server.resume();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (request, outcome) in requests.iter_mut().zip(&mut outcomes) {
            if outcome.is_none() {
                match request.as_mut().poll(cx) {
                    Poll::Ready(o) => *outcome = Some(o),
                    Poll::Pending => done = false,
                }
            }
        }
        if done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outcomes
        .into_iter()
        .map(|o| o.expect("every request finished"))
        .collect()
}

/// A request of a generated round.
#[derive(Debug, Clone)]
enum Op {
    Check { key: usize, cost: u64 },
    Peek { key: usize },
}

fn rounds(limit: u64) -> impl Strategy<Value = Vec<(u64, Vec<Op>)>> {
    let op = prop_oneof![
        4 => (0usize..3, 1..=limit).prop_map(|(key, cost)| Op::Check { key, cost }),
        1 => (0usize..3).prop_map(|key| Op::Peek { key }),
    ];
    // Each round: how far the clock moves first (µs), then the requests.
    proptest::collection::vec(
        (0u64..2_000_000, proptest::collection::vec(op, 1..24)),
        1..4,
    )
}

/// Requests queued behind a call in flight are decided in the order they
/// were made, each exactly as the pure policy decides it: a batch is the
/// same as a sequence of single calls.
#[test]
fn queued_requests_are_decided_in_order_as_the_model_says() {
    let server = RedisServer::start();
    let rt = runtime();
    let target = Target::Standalone(server.url());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        // The ordering itself is tested at length on a scripted transport;
        // here, that real batches decide as the model.
        cases: 12,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = small_policy().prop_flat_map(|p| (Just(p), rounds(p.limit())));
    let result = runner.run(&strategy, |(policy, rounds)| {
        rt.block_on(async {
            let start = 1_700_000_000_000_000;
            let clock = ManualClock::new(start);
            let limiter = RedisLimiter::connect(policy, options(&target, &clock, "order"))
                .await
                .expect("connect");
            let keys: [&[u8]; 3] = [b"a", b"b{c}", b"a\n"];
            let mut states = [
                PolicyState::default(),
                PolicyState::default(),
                PolicyState::default(),
            ];
            let mut now = start;
            for (advance, ops) in rounds {
                now += advance;
                clock.set(now);
                let requests: Vec<Pending<'_>> = ops
                    .iter()
                    .map(|op| match *op {
                        Op::Check { key, cost } => {
                            Box::pin(limiter.check(keys[key], cost)) as Pending<'_>
                        }
                        Op::Peek { key } => Box::pin(limiter.peek(keys[key])),
                    })
                    .collect();
                let outcomes = frozen_then_thawed(&server, requests).await;
                for (op, outcome) in ops.iter().zip(outcomes) {
                    let got = outcome.expect("Redis decided");
                    let want: Decision = match *op {
                        Op::Check { key, cost } => {
                            let (decision, next) = policy.check(&states[key], now, cost).unwrap();
                            if decision.allowed {
                                states[key] = next;
                            }
                            decision
                        }
                        Op::Peek { key } => policy.peek(&states[key], now),
                    };
                    prop_assert_eq!(got, want, "{:?} at {}", op, now);
                }
            }
            Ok(())
        })
    });
    result.unwrap();
}

/// Concurrent requests share calls: far fewer `FCALL`s than decisions.
/// With `max_batch = 1` each decision is exactly one `FCALL`; on the
/// script path, one `EVALSHA`.
#[test]
fn concurrent_requests_share_calls_unless_max_batch_is_one() {
    let server = RedisServer::start();
    let target = Target::Standalone(server.url());
    runtime().block_on(async {
        let clock = ManualClock::new(1_700_000_000_000_000);
        let policy = Policy::fixed_window(100, Duration::from_secs(60)).unwrap();
        for (max_batch, functions) in [
            (RedisOptions::DEFAULT_MAX_BATCH, true),
            (1, true),
            (RedisOptions::DEFAULT_MAX_BATCH, false),
            (1, false),
        ] {
            let (command, other) = if functions {
                ("fcall", "evalsha")
            } else {
                ("evalsha", "fcall")
            };
            let options = options(&target, &clock, "share")
                .with_max_batch(NonZeroUsize::new(max_batch).unwrap())
                .with_functions(functions);
            let limiter = RedisLimiter::connect(policy, options).await.unwrap();
            let _ = server.cli(&["CONFIG", "RESETSTAT"]);
            let requests: Vec<Pending<'_>> = (0..300)
                .map(|i| {
                    Box::pin(limiter.check_one(if i % 2 == 0 { b"even" } else { b"odd" }))
                        as Pending<'_>
                })
                .collect();
            let outcomes: Vec<Decision> = frozen_then_thawed(&server, requests)
                .await
                .into_iter()
                .map(|o| o.expect("Redis decided"))
                .collect();
            // Calls since the reset.
            let calls = server
                .command_stat(command, "calls")
                .expect("INFO commandstats counts the calls") as u64;
            assert_eq!(server.command_stat(other, "calls"), None, "no {other}");
            // 150 requests per key, a limit of 100: exactly the limit passes,
            // with every `remaining` from 99 down to 0 once.
            for parity in 0..2 {
                let mut remaining: Vec<u64> = outcomes
                    .iter()
                    .skip(parity)
                    .step_by(2)
                    .filter(|d| d.allowed)
                    .map(|d| d.remaining)
                    .collect();
                remaining.sort_unstable();
                assert_eq!(
                    remaining,
                    (0..100).collect::<Vec<_>>(),
                    "max_batch {max_batch}, {command}"
                );
            }
            if max_batch == 1 {
                assert_eq!(calls, 300, "one {command} per decision");
            } else {
                // One call went alone; the batching task (two calls on the
                // wire at most) may have taken a few requests before the
                // rest were queued; the rest went in calls of up to 128.
                assert!(calls <= 12, "{calls} {command} calls for 300 decisions");
            }
        }
    });
}

/// A key holding a value the script did not write fails its own request
/// (with an error that says why), not the others of its call.
#[test]
fn a_foreign_value_fails_only_its_own_request() {
    let server = RedisServer::start();
    let target = Target::Standalone(server.url());
    runtime().block_on(async {
        let clock = ManualClock::new(1_700_000_000_000_000);
        let policy = Policy::token_bucket(5, 1, Duration::from_secs(1)).unwrap();
        let limiter = RedisLimiter::connect(policy, options(&target, &clock, "foreign"))
            .await
            .unwrap();
        // Limiter keys are often client addresses: never in an error.
        let bad = String::from_utf8(limiter.redis_key(b"192.0.2.1")).unwrap();
        let wrong_type = String::from_utf8(limiter.redis_key(b"192.0.2.2")).unwrap();
        let _ = server.cli(&["SET", &bad, "not a bucket"]);
        let _ = server.cli(&["HSET", &wrong_type, "field", "1"]);
        let keys: [&[u8]; 6] = [
            b"good-1",
            b"192.0.2.1",
            b"good-2",
            b"192.0.2.2",
            b"good-3",
            b"good-1",
        ];
        let requests: Vec<Pending<'_>> = keys
            .iter()
            .map(|k| Box::pin(limiter.check_one(k)) as Pending<'_>)
            .collect();
        let outcomes = frozen_then_thawed(&server, requests).await;
        let decided: Vec<bool> = outcomes.iter().map(Result::is_ok).collect();
        assert_eq!(decided, [true, false, true, false, true, true]);
        assert_eq!(
            outcomes[5].as_ref().unwrap().remaining,
            3,
            "good-1's second request"
        );
        for (i, why) in [(1, "did not write"), (3, "WRONGTYPE")] {
            let chain = ErrorChain(outcomes[i].as_ref().unwrap_err()).to_string();
            assert!(chain.contains(why), "{chain}");
            assert!(!chain.contains("192.0.2."), "the key is in {chain:?}");
        }
        assert_eq!(server.cli(&["GET", &bad]), "not a bucket", "left as it was");
    });
}
