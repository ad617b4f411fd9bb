//! The batcher on a scripted transport and a paused clock: the order of
//! calls, the lone call, each request's own deadline, and how failures
//! reach each caller. (End-to-end batching on a real server is in
//! `tests/batching.rs`.)

mod scripted;

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use ratelimit_conformance::strategy::small_policy;
use ratelimit_core::{Decision, Policy};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Batcher;
use crate::call::{Caller, Failure, Outcome};
use crate::call_metrics::CallMetrics;
use crate::script::{ForeignValue, Request};
use scripted::{HeldCall, Model, Scripted};

const NOW: u64 = 1_700_000_000_000_000;
const TIMEOUT: Duration = Duration::from_millis(1000);
const MS: Duration = Duration::from_millis(1);

fn policy() -> Policy {
    Policy::fixed_window(10, Duration::from_secs(60)).unwrap()
}

fn request(key: &str) -> Request {
    Request {
        redis_key: key.as_bytes().to_vec(),
        cost: 1,
        now: Some(NOW),
    }
}

/// A batcher on a scripted transport, and the calls it makes.
fn batcher(max_batch: usize) -> (Arc<Batcher<Scripted>>, mpsc::UnboundedReceiver<HeldCall>) {
    let (transport, calls) = Scripted::new();
    let caller = Arc::new(Caller {
        transport,
        timeout: TIMEOUT,
        metrics: CallMetrics::new(),
    });
    (Arc::new(Batcher::start(caller, max_batch)), calls)
}

/// Makes `request` from a task of its own: its outcome, and how long its
/// caller waited.
fn spawn(batcher: &Arc<Batcher<Scripted>>, request: Request) -> JoinHandle<(Outcome, Duration)> {
    let batcher = Arc::clone(batcher);
    tokio::spawn(async move {
        let started = Instant::now();
        let outcome = batcher.decide(request).await;
        (outcome, started.elapsed())
    })
}

/// The next call, which must come without the clock moving.
async fn next_call(calls: &mut mpsc::UnboundedReceiver<HeldCall>) -> HeldCall {
    let at = Instant::now();
    let call = calls.recv().await.expect("the batcher is alive");
    assert_eq!(at.elapsed(), Duration::ZERO, "the call came late");
    call
}

/// Answers `call` as Redis would.
fn answer(call: HeldCall, redis: &mut Model) {
    let replies = redis.replies(&call.requests);
    call.answer(Ok(replies));
}

async fn decided(task: JoinHandle<(Outcome, Duration)>) -> Decision {
    task.await.unwrap().0.expect("decided")
}

#[tokio::test(start_paused = true)]
async fn a_lone_call_goes_at_once_and_the_calls_behind_it_wait_for_it() {
    let (batcher, mut calls) = batcher(128);
    let mut redis = Model::new(policy());

    let first = spawn(&batcher, request("first"));
    let lone = next_call(&mut calls).await;
    assert_eq!(lone.keys(), ["first"]);
    assert!(batcher.in_flight.lone());

    let queued: Vec<_> = (0..4)
        .map(|i| spawn(&batcher, request(&format!("q{i}"))))
        .collect();
    // Redis is slow, within the timeout: nothing overtakes the lone call.
    tokio::time::sleep(TIMEOUT / 2).await;
    assert!(
        calls.try_recv().is_err(),
        "a batch went beside the lone call"
    );
    answer(lone, &mut redis);
    assert_eq!(decided(first).await.remaining, 9);

    // The four go together, shared between the two calls the batching task
    // keeps on the wire, both sent before either returns.
    let a = next_call(&mut calls).await;
    let b = next_call(&mut calls).await;
    assert_eq!(a.keys(), ["q0", "q1"]);
    assert_eq!(b.keys(), ["q2", "q3"]);
    assert_eq!(batcher.in_flight.batches(), 2);
    assert!(!batcher.in_flight.lone());
    let mut redis_b = Model::new(policy());
    answer(b, &mut redis_b);
    answer(a, &mut redis);
    for task in queued {
        assert_eq!(decided(task).await.remaining, 9, "each its own key");
    }

    // All returned: the next request goes alone again.
    tokio::time::sleep(MS).await;
    assert_eq!(batcher.in_flight.batches(), 0);
    let next = spawn(&batcher, request("next"));
    let call = next_call(&mut calls).await;
    assert!(batcher.in_flight.lone());
    // Its caller gives up: the flag goes with it.
    next.abort();
    assert!(next.await.unwrap_err().is_cancelled());
    assert!(!batcher.in_flight.lone());
    drop(call);
    let again = spawn(&batcher, request("again"));
    let call = next_call(&mut calls).await;
    assert!(batcher.in_flight.lone());
    answer(call, &mut redis);
    assert!(decided(again).await.allowed);
}

/// A request queued behind a lone call is counted until its own call goes:
/// a request made after it, once the lone call has returned but before the
/// batching task took the queued one, must not go alone and overtake it.
/// (It did: a lease's release, sent after its check was queued and its
/// caller gave up, reached Redis first, freed nothing, and the check then
/// took a lease no one held.)
#[tokio::test(start_paused = true)]
async fn a_request_made_after_a_queued_one_never_reaches_redis_before_it() {
    let (batcher, mut calls) = batcher(128);
    let mut redis = Model::new(policy());
    // One caller makes two requests in a row: the second as soon as the
    // first returns.
    let caller = {
        let batcher = Arc::clone(&batcher);
        tokio::spawn(async move {
            batcher.decide(request("first")).await.expect("decided");
            batcher.decide(request("later")).await.expect("decided")
        })
    };
    let lone = next_call(&mut calls).await;
    assert_eq!(lone.keys(), ["first"]);
    // Redis answers the lone call; before its caller runs again, a request
    // is queued (the lone call's flag is still up), and the batching task
    // has not taken it yet when the caller makes its next request.
    answer(lone, &mut redis);
    let mut queued = Box::pin(batcher.decide(request("queued")));
    assert!(futures_util::poll!(queued.as_mut()).is_pending());

    let next = next_call(&mut calls).await;
    assert_eq!(next.keys(), ["queued"], "the later request overtook it");
    let after = next_call(&mut calls).await;
    assert_eq!(after.keys(), ["later"]);
    answer(next, &mut redis);
    answer(after, &mut redis);
    assert!(queued.await.expect("decided").allowed);
    assert!(caller.await.unwrap().allowed);
    tokio::time::sleep(MS).await;
    assert_eq!(batcher.in_flight.batches(), 0);
}

/// `gather` holding requests must not wait: `drive` drops it when a call
/// returns meanwhile, and the requests it held would never be answered.
/// tokio's cooperative budget makes a receive wait even with messages
/// queued, so here `gather` is polled once after every possible amount of
/// the task's budget was spent: whatever it does not return must still be
/// queued. (It took the first request with the budget's last unit, then
/// waited for the rest, and dropped, lost it: a caller was told the
/// batching task had stopped.)
#[tokio::test]
async fn gathering_never_waits_holding_requests() {
    const QUEUED: usize = 3;
    for spent in 0..=512 {
        let (queue, mut receiver) = mpsc::unbounded_channel();
        let mut waiting = Vec::new();
        for key in ["a", "b", "c"] {
            let (outcome, answer) = tokio::sync::oneshot::channel();
            let deadline = Instant::now() + TIMEOUT;
            queue
                .send(super::Queued::<Scripted> {
                    request: request(key),
                    waiter: super::Waiter { deadline, outcome },
                })
                .unwrap();
            waiting.push(answer);
        }
        let flight = Arc::new(super::Flight::default());
        let (taken, left) = tokio::spawn(async move {
            for _ in 0..spent {
                let spend = std::pin::pin!(tokio::task::consume_budget());
                if futures_util::poll!(spend).is_pending() {
                    break;
                }
            }
            let taken = {
                let gathering = std::pin::pin!(super::gather(&mut receiver, 8, 1, &flight));
                match futures_util::poll!(gathering) {
                    std::task::Poll::Ready(Some((_in_flight, batch))) => batch.len(),
                    std::task::Poll::Ready(None) => unreachable!("the queue is open"),
                    // Dropped here, as `drive` drops it.
                    std::task::Poll::Pending => 0,
                }
            };
            (taken, receiver.len())
        })
        .await
        .unwrap();
        assert_eq!(
            taken + left,
            QUEUED,
            "{spent} units of budget spent: {taken} gathered, {left} still queued"
        );
        assert!(
            taken == 0 || taken == QUEUED,
            "a share of everything queued"
        );
        drop(queue);
        drop(waiting);
    }
}

/// The known issue this fixes: a call used to give up at the earliest
/// deadline among its requests, failing the later ones early.
#[tokio::test(start_paused = true)]
async fn a_queued_request_keeps_its_own_deadline_in_a_shared_call() {
    let (batcher, mut calls) = batcher(128);
    let mut redis = Model::new(policy());
    let start = Instant::now();
    let first = spawn(&batcher, request("first"));
    let lone = next_call(&mut calls).await;
    let early = spawn(&batcher, request("early"));
    tokio::time::sleep(TIMEOUT * 6 / 10).await;
    let late = spawn(&batcher, request("late"));
    let other = spawn(&batcher, request("other"));
    tokio::time::sleep(TIMEOUT / 10).await;
    answer(lone, &mut redis);
    decided(first).await;

    let shared = next_call(&mut calls).await;
    assert_eq!(shared.keys(), ["early", "late"]);
    let rest = next_call(&mut calls).await;
    assert_eq!(rest.keys(), ["other"]);
    // Redis answers after early's deadline, before late's.
    tokio::time::sleep_until(start + TIMEOUT * 11 / 10).await;
    answer(shared, &mut redis);
    answer(rest, &mut redis);

    let (outcome, waited) = early.await.unwrap();
    assert!(matches!(outcome, Err(Failure::Timeout)), "{outcome:?}");
    assert!(waited >= TIMEOUT && waited <= TIMEOUT + MS, "{waited:?}");
    let (outcome, waited) = late.await.unwrap();
    assert!(outcome.expect("decided in time").allowed);
    assert_eq!(waited, TIMEOUT / 2);
    decided(other).await;
}

#[tokio::test(start_paused = true)]
async fn when_redis_hangs_every_request_fails_at_its_own_deadline() {
    let (batcher, mut calls) = batcher(128);
    // Three waves, the later ones queued behind calls still waiting.
    let mut tasks = Vec::new();
    for wave in 0..3 {
        for i in 0..20 {
            tasks.push(spawn(&batcher, request(&format!("w{wave}-{i}"))));
        }
        tokio::time::sleep(TIMEOUT * 4 / 10).await;
    }
    for task in tasks {
        let (outcome, waited) = task.await.unwrap();
        assert!(matches!(outcome, Err(Failure::Timeout)), "{outcome:?}");
        assert!(waited >= TIMEOUT && waited <= TIMEOUT + MS, "{waited:?}");
    }
    // The calls Redis never answered: the lone one, then none carrying the
    // rest of the first wave (their time ran out while they queued behind
    // it), and every other request once.
    let mut held = Vec::new();
    while let Ok(call) = calls.try_recv() {
        held.push(call);
    }
    assert_eq!(held[0].keys(), ["w0-0"]);
    let mut sent: Vec<String> = held[1..].iter().flat_map(HeldCall::keys).collect();
    sent.sort();
    let mut expected: Vec<String> = (1..3)
        .flat_map(|wave| (0..20).map(move |i| format!("w{wave}-{i}")))
        .collect();
    expected.sort();
    assert_eq!(sent, expected);

    // Redis is back: the next request is decided.
    drop(held);
    let mut redis = Model::new(policy());
    let after = spawn(&batcher, request("after"));
    answer(next_call(&mut calls).await, &mut redis);
    assert!(decided(after).await.allowed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_fails_its_own_requests_and_no_others() {
    let (batcher, mut calls) = batcher(128);
    let mut redis = Model::new(policy());
    let error_of = |outcome: Outcome| match outcome {
        Err(Failure::Call(e)) => e.to_string(),
        other => panic!("not a call error: {other:?}"),
    };

    let lone = spawn(&batcher, request("lone"));
    next_call(&mut calls)
        .await
        .answer(Err("connection reset".into()));
    assert_eq!(error_of(lone.await.unwrap().0), "connection reset");

    let first = spawn(&batcher, request("first"));
    let held = next_call(&mut calls).await;
    let queued: Vec<_> = ["c", "d", "e", "f"]
        .into_iter()
        .map(|k| spawn(&batcher, request(k)))
        .collect();
    tokio::time::sleep(MS).await;
    answer(held, &mut redis);
    decided(first).await;
    let failing = next_call(&mut calls).await;
    let foreign = next_call(&mut calls).await;
    assert_eq!(failing.keys(), ["c", "d"]);
    assert_eq!(foreign.keys(), ["e", "f"]);
    failing.answer(Err("boom".into()));
    let wrong = ForeignValue("WRONGTYPE".into());
    let e = redis.decide(&foreign.requests[0]);
    foreign.answer(Ok(vec![Ok(e), Err(wrong.clone())]));
    let [c, d, e, f]: [_; 4] = queued.try_into().unwrap();
    assert_eq!(error_of(c.await.unwrap().0), "boom");
    assert_eq!(error_of(d.await.unwrap().0), "boom");
    assert!(decided(e).await.allowed);
    match f.await.unwrap().0 {
        Err(Failure::Foreign(got)) => assert_eq!(got, wrong),
        other => panic!("not the foreign value: {other:?}"),
    }

    // A transport answering another number of requests than it was given
    // fails the call rather than hand decisions to the wrong callers.
    let g = spawn(&batcher, request("g"));
    next_call(&mut calls).await.answer(Ok(Vec::new()));
    assert!(error_of(g.await.unwrap().0).contains("0 answers to a call of 1"));
}

/// A request of a generated round.
#[derive(Debug, Clone, Copy)]
struct Op {
    key: usize,
    /// 0: a peek.
    cost: u64,
}

/// Rounds of requests made together, each after the injected clock moved
/// on (µs).
fn rounds(limit: u64) -> impl Strategy<Value = Vec<(u64, Vec<Op>)>> {
    let op = prop_oneof![
        4 => (0usize..3, 1..=limit).prop_map(|(key, cost)| Op { key, cost }),
        1 => (0usize..3).prop_map(|key| Op { key, cost: 0 }),
    ];
    proptest::collection::vec(
        (0u64..2_000_000, proptest::collection::vec(op, 1..30)),
        1..5,
    )
}

/// Requests made together are decided as if each had a call of its own,
/// in the order they were made, whatever the batch size and however late
/// Redis answers each call: Redis decides each call when it arrives, and
/// its reply comes back after a delay (so the replies of two calls in
/// flight may come back in either order).
#[test]
fn requests_are_decided_in_the_order_they_were_made() {
    let strategy = small_policy().prop_flat_map(|p| {
        (
            Just(p),
            1usize..=6,
            rounds(p.limit()),
            proptest::collection::vec(0u64..=3, 1..8),
        )
    });
    let config = ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let result = TestRunner::new(config).run(&strategy, |(policy, max_batch, rounds, delays)| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let (batcher, mut calls) = batcher(max_batch);
            let redis = tokio::spawn(async move {
                let mut redis = Model::new(policy);
                let mut delays = delays.into_iter().cycle();
                let mut sizes = Vec::new();
                while let Some(call) = calls.recv().await {
                    sizes.push(call.requests.len());
                    let replies = redis.replies(&call.requests);
                    let delay = Duration::from_millis(delays.next().expect("cycles"));
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        call.answer(Ok(replies));
                    });
                }
                sizes
            });
            let keys = ["a", "b{c}", "a\n"];
            let mut sequential = Model::new(policy);
            let mut now = NOW;
            let mut made = 0;
            for (advance, ops) in rounds {
                now += advance;
                let requests: Vec<Request> = ops
                    .iter()
                    .map(|op| Request {
                        redis_key: keys[op.key].as_bytes().to_vec(),
                        cost: op.cost,
                        now: Some(now),
                    })
                    .collect();
                let tasks: Vec<_> = requests
                    .iter()
                    .map(|r| spawn(&batcher, r.clone()))
                    .collect();
                for (request, task) in requests.iter().zip(tasks) {
                    let got = task.await.unwrap().0.expect("decided");
                    prop_assert_eq!(got, sequential.decide(request), "{:?}", request);
                    made += 1;
                }
            }
            drop(batcher);
            let sizes = redis.await.unwrap();
            prop_assert_eq!(sizes.iter().sum::<usize>(), made, "each decided once");
            prop_assert!(sizes.iter().all(|n| *n <= max_batch), "{:?}", sizes);
            Ok(())
        })
    });
    result.unwrap();
}
