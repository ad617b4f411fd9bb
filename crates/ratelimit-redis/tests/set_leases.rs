//! Leases of a `RedisSetLimiter` on a real server: released on drop and on
//! cancellation, freed at once by a settle, expired by their TTL after a
//! crash; one command per decision (`FCALL`, or `EVALSHA` with functions
//! off or refused); a lost function library loaded again.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{
    Concurrency, ManualClock, NamedLimit, Policy, PolicySet, Reservation, SetLimiter,
};
use ratelimit_redis::{RedisOptions, RedisSetLimiter, Target};
use ratelimit_redis_harness::RedisServer;

use support::{fresh_prefix, options, runtime};

const STREAMS: u64 = 4;

/// Requests, settled tokens and streams: the set of an LLM route.
fn llm_set(streams: u64, ttl: Duration) -> PolicySet {
    let minute = Duration::from_secs(60);
    PolicySet::new(vec![
        NamedLimit::new("requests", Policy::fixed_window(1_000_000, minute).unwrap()).unwrap(),
        NamedLimit::new(
            "tokens",
            Policy::token_bucket(1_000_000, 1_000_000, minute).unwrap(),
        )
        .unwrap()
        .settling(),
        NamedLimit::new("streams", Concurrency::new(streams, ttl).unwrap()).unwrap(),
    ])
    .unwrap()
}

/// Options on the server's time.
fn server_time(server: &RedisServer, tag: &str) -> RedisOptions {
    RedisOptions::new(Target::Standalone(server.url()))
        .with_prefix(fresh_prefix(tag))
        .with_timeout(Duration::from_secs(2))
}

/// Leases held for `key`, by the limiter's own peek.
async fn held(limiter: &RedisSetLimiter, key: &[u8]) -> u64 {
    let d = limiter.peek_set(key).await.expect("a peek");
    STREAMS - d.decisions[2].remaining
}

/// Waits (boundedly) until the releases sent without waiting have
/// reached Redis, and returns the leases then held.
async fn drained(limiter: &RedisSetLimiter, key: &[u8]) -> u64 {
    for _ in 0..1_000 {
        if held(limiter, key).await == 0 {
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    held(limiter, key).await
}

/// A small deterministic generator (xorshift), for the abort points.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn cancelled_acquisitions_leave_no_lease_held() {
    let server = RedisServer::start();
    runtime().block_on(async {
        // Leases live a minute: only releases can free them in this test.
        let set = llm_set(STREAMS, Duration::from_secs(60));
        let limiter = Arc::new(
            RedisSetLimiter::connect(set, server_time(&server, "cancel"))
                .await
                .expect("connect"),
        );
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut tasks = Vec::new();
        let mut admitted = 0u64;
        for round in 0..100 {
            for _ in 0..100 {
                let limiter = Arc::clone(&limiter);
                let hold = rng.below(4);
                tasks.push((
                    tokio::spawn(async move {
                        let r = Reservation::acquire(limiter, b"route", &[1, 500, 1]).await;
                        if let Ok(Ok(reservation)) = r {
                            for _ in 0..hold {
                                tokio::task::yield_now().await;
                            }
                            if hold == 2 {
                                // Long enough to be aborted while holding.
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            if hold == 3 {
                                reservation.settle(&[1, 100, 0]).await.ok();
                            }
                            1
                        } else {
                            0
                        }
                    }),
                    rng.below(40),
                ));
            }
            // Abort each task after a random number of yields of this one
            // (before its check was sent, or while it is in flight), after
            // a few ms (while the reservation is held), or never.
            for step in 0..30 {
                for (task, at) in &tasks {
                    if *at == step {
                        task.abort();
                    }
                }
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            for (task, at) in &tasks {
                if (30..35).contains(at) {
                    task.abort();
                }
            }
            for (task, _) in tasks.drain(..) {
                admitted += task.await.unwrap_or(0);
            }
            assert!(held(&limiter, b"route").await <= STREAMS, "round {round}");
        }
        assert!(admitted > 0, "some acquisitions completed");
        assert_eq!(drained(&limiter, b"route").await, 0, "leases leaked");
    });
}

#[test]
fn a_settled_lease_is_free_at_once_and_a_dropped_one_soon() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let set = llm_set(1, Duration::from_secs(60));
        let limiter = Arc::new(
            RedisSetLimiter::connect(set, server_time(&server, "free"))
                .await
                .expect("connect"),
        );
        let held = Reservation::acquire(limiter.clone(), b"k", &[1, 10, 1])
            .await
            .unwrap()
            .expect("allowed");
        let denied = Reservation::acquire(limiter.clone(), b"k", &[1, 10, 1])
            .await
            .unwrap()
            .expect_err("one stream at a time");
        assert_eq!(denied.first_denied(), Some(2));
        held.settle(&[1, 10, 0]).await.expect("a settle");
        // The settle released the lease in its own call.
        let again = Reservation::acquire(limiter.clone(), b"k", &[1, 10, 1])
            .await
            .unwrap()
            .expect("free at once after the settle");
        drop(again);
        let mut freed = false;
        for _ in 0..500 {
            if limiter.peek_set(b"k").await.unwrap().decisions[2].remaining == 1 {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(freed, "the dropped reservation's release reached Redis");
    });
}

#[test]
fn a_crashed_holders_lease_expires_by_its_ttl() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let clock = ManualClock::new(1_700_000_000_000_000);
        let target = Target::Standalone(server.url());
        let ttl = Duration::from_secs(30);
        let limiter = Arc::new(
            RedisSetLimiter::connect(llm_set(1, ttl), options(&target, &clock, "crash"))
                .await
                .expect("connect"),
        );
        let held = Reservation::acquire(limiter.clone(), b"k", &[1, 10, 1])
            .await
            .unwrap()
            .expect("allowed");
        // The holder vanishes without releasing.
        std::mem::forget(held);
        clock.advance(ttl - Duration::from_millis(1));
        let d = limiter.check_set(b"k", &[0, 0, 1]).await.unwrap();
        assert!(!d.decision.allowed, "still held 1 ms before its expiry");
        assert_eq!(d.decision.retry_after, Some(Duration::from_millis(1)));
        clock.advance(Duration::from_millis(1));
        let d = limiter.check_set(b"k", &[0, 0, 1]).await.unwrap();
        assert!(d.decision.allowed, "expired at its TTL");

        // On the server's time the key expires with its latest state: the
        // lease (30 s) or the requests' minute window, whichever ends last,
        // rounded up to a whole second.
        let on_server = RedisSetLimiter::connect(llm_set(1, ttl), server_time(&server, "pttl"))
            .await
            .expect("connect");
        let check = on_server.check_set(b"k", &[1, 10, 1]).await.unwrap();
        std::mem::forget(check.receipt);
        let client = redis::Client::open(server.url()).unwrap();
        let mut c = client.get_connection().unwrap();
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&on_server.redis_key(b"k")[..])
            .query(&mut c)
            .unwrap();
        // At least the lease's 30 s less the time this test took since the
        // check (seconds on a loaded machine), at most the minute window.
        assert!(pttl > 20_000 && pttl <= 61_000, "PTTL {pttl}");
    });
}

/// The calls of `command` (lowercase) in `INFO commandstats`.
fn calls(c: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(c).unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Runs 104 decisions of every kind one after the other (checks with a
/// lease, settles, a renew, a peek) on `limiter`; returns their number.
async fn decisions(limiter: &RedisSetLimiter) -> u64 {
    let mut decisions = 0;
    for i in 0..50u64 {
        let check = limiter.check_set(b"k", &[1, 100, 1]).await.unwrap();
        decisions += 1;
        assert!(check.decision.allowed);
        limiter
            .settle(check.receipt.unwrap(), &[1, i, 0])
            .await
            .unwrap();
        decisions += 1;
    }
    let mut check = limiter.check_set(b"k", &[1, 100, 1]).await.unwrap();
    decisions += 1;
    assert!(limiter
        .renew(check.receipt.as_mut().unwrap())
        .await
        .unwrap());
    decisions += 1;
    limiter.peek_set(b"k").await.unwrap();
    decisions + 1
}

/// Each decision is one command: an `FCALL` of the set's function, or with
/// functions off, an `EVALSHA` of its script.
#[test]
fn one_command_per_decision() {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_connection().unwrap();
    runtime().block_on(async {
        for (functions, command, other) in [(true, "fcall", "evalsha"), (false, "evalsha", "fcall")]
        {
            let limiter = RedisSetLimiter::connect(
                llm_set(STREAMS, Duration::from_secs(60)),
                server_time(&server, "calls").with_functions(functions),
            )
            .await
            .expect("connect");
            // Warm: the library (or the script) is loaded at connect.
            limiter.peek_set(b"k").await.unwrap();
            let (before, before_other) = (calls(&mut c, command), calls(&mut c, other));
            let n = decisions(&limiter).await;
            assert_eq!(calls(&mut c, command) - before, n, "{command}");
            assert_eq!(calls(&mut c, other), before_other, "no {other}");
        }
    });
}

/// A library the server lost (`FUNCTION FLUSH`, a restart without
/// persistence) is loaded again by the call that finds it missing, which
/// is then decided as ever.
#[test]
fn a_lost_function_library_is_loaded_again() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let limiter = RedisSetLimiter::connect(
            llm_set(STREAMS, Duration::from_secs(60)),
            server_time(&server, "flushed"),
        )
        .await
        .expect("connect");
        assert!(server.cli(&["FUNCTION", "LIST"]).contains("ratelimit_set_"));
        let first = limiter.check_set(b"k", &[1, 10, 0]).await.unwrap();
        assert_eq!(server.cli(&["FUNCTION", "FLUSH"]), "OK");
        assert_eq!(server.cli(&["FUNCTION", "LIST"]), "");
        let second = limiter.check_set(b"k", &[1, 10, 0]).await.unwrap();
        assert_eq!(
            second.decision.decisions[0].remaining + 1,
            first.decision.decisions[0].remaining,
            "the count went on"
        );
        assert!(server.cli(&["FUNCTION", "LIST"]).contains("ratelimit_set_"));
    });
}

/// A server that refuses `FUNCTION LOAD` (here an ACL without it, as an
/// older Redis or a proxy would) runs the set as a script, exactly.
#[test]
fn a_server_refusing_function_load_runs_the_script() {
    let server = RedisServer::start_with(&[
        "--user",
        "bob",
        "on",
        ">pw",
        "~*",
        "&*",
        "+@all",
        "-function|load",
    ]);
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_connection().unwrap();
    runtime().block_on(async {
        let url = format!("redis://bob:pw@127.0.0.1:{}", server.port());
        let limiter = RedisSetLimiter::connect(
            llm_set(STREAMS, Duration::from_secs(60)),
            RedisOptions::standalone(url)
                .with_prefix(fresh_prefix("nofunctions"))
                .with_timeout(Duration::from_secs(2)),
        )
        .await
        .expect("connect");
        assert_eq!(server.cli(&["FUNCTION", "LIST"]), "", "nothing loaded");
        let before = calls(&mut c, "evalsha");
        let n = decisions(&limiter).await;
        assert_eq!(calls(&mut c, "evalsha") - before, n);
        assert_eq!(calls(&mut c, "fcall"), 0);
        let d = limiter.peek_set(b"k").await.unwrap();
        assert_eq!(
            d.decisions[0].remaining,
            1_000_000 - 51,
            "51 requests counted"
        );
        assert_eq!(STREAMS - d.decisions[2].remaining, 1, "the last lease held");
    });
}

#[test]
fn a_foreign_value_is_a_data_error_and_changes_nothing() {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_connection().unwrap();
    runtime().block_on(async {
        let limiter = RedisSetLimiter::connect(
            llm_set(STREAMS, Duration::from_secs(60)),
            server_time(&server, "foreign"),
        )
        .await
        .expect("connect");
        let key = limiter.redis_key(b"k");
        let get = |c: &mut redis::Connection| -> Vec<u8> {
            redis::cmd("GET").arg(&key[..]).query(c).unwrap()
        };
        let set = |c: &mut redis::Connection, value: &[u8]| {
            let _: () = redis::cmd("SET").arg(&key[..]).arg(value).query(c).unwrap();
        };
        // A value as the limiter writes it, holding a lease: the header (9
        // bytes), requests (id, k, count), tokens (id, tat, rf, seen),
        // streams (id, 1 lease, the lease).
        let taken = limiter.check_set(b"k", &[1, 1, 1]).await.unwrap();
        std::mem::forget(taken.receipt);
        let value = get(&mut c);
        assert_eq!(value.len(), 9 + 24 + 32 + 16 + 24);
        // Cut short in the tokens' section.
        set(&mut c, &value[..9 + 24 + 20]);
        let e = limiter.check_set(b"k", &[1, 1, 1]).await.unwrap_err();
        assert!(e.is_data(), "{e}");
        assert!(
            e.chain().to_string().contains("\"tokens\""),
            "the policy is named: {e}"
        );
        assert!(
            !e.chain().to_string().contains("k}"),
            "the key stays out: {e}"
        );
        assert_eq!(
            get(&mut c),
            value[..9 + 24 + 20],
            "nothing taken from the other policies, no lease taken"
        );
        // More leases counted than the value holds.
        let mut leases = value.clone();
        leases[9 + 24 + 32 + 8..9 + 24 + 32 + 16].copy_from_slice(&2.0f64.to_le_bytes());
        set(&mut c, &leases);
        let e = limiter.peek_set(b"k").await.unwrap_err();
        assert!(e.is_data(), "{e}");
        assert!(e.chain().to_string().contains("\"streams\""), "{e}");
        let e = limiter.check_set(b"k", &[1, 1, 0]).await.unwrap_err();
        assert!(e.is_data(), "{e}");
        assert_eq!(get(&mut c), leases, "nothing written");
        // The value as written still reads.
        set(&mut c, &value);
        assert_eq!(held(&limiter, b"k").await, 1);
        // A hash under the key (the layout before this one).
        let _: () = redis::cmd("DEL").arg(&key[..]).query(&mut c).unwrap();
        let _: () = redis::cmd("HSET")
            .arg(&key[..])
            .arg("tokens:tbs")
            .arg(vec![0u8; 24])
            .query(&mut c)
            .unwrap();
        let e = limiter.check_set(b"k", &[1, 1, 1]).await.unwrap_err();
        assert!(e.is_data(), "{e}");
        assert!(e.chain().to_string().contains("the set's key"), "{e}");
        // The key itself of another type.
        let _: () = redis::cmd("DEL").arg(&key[..]).query(&mut c).unwrap();
        let _: () = redis::cmd("SET")
            .arg(&key[..])
            .arg("x")
            .query(&mut c)
            .unwrap();
        let e = limiter.check_set(b"k", &[1, 1, 1]).await.unwrap_err();
        assert!(e.is_data(), "{e}");
        assert!(
            !e.chain().to_string().contains("k}"),
            "the key stays out: {e}"
        );
        let value: String = redis::cmd("GET").arg(&key[..]).query(&mut c).unwrap();
        assert_eq!(value, "x", "nothing written");
        limiter.reset_set(b"k").await.unwrap();
        assert!(
            limiter
                .check_set(b"k", &[1, 1, 1])
                .await
                .unwrap()
                .decision
                .allowed
        );
    });
}

#[test]
fn a_settle_without_redis_is_an_error_and_keeps_the_estimate() {
    let mut server = Some(RedisServer::start());
    runtime().block_on(async {
        let options =
            server_time(server.as_ref().unwrap(), "gone").with_timeout(Duration::from_millis(500));
        let limiter = RedisSetLimiter::connect(llm_set(STREAMS, Duration::from_secs(60)), options)
            .await
            .expect("connect");
        let check = limiter.check_set(b"k", &[1, 500, 1]).await.unwrap();
        server.take();
        let e = limiter
            .settle(check.receipt.unwrap(), &[1, 0, 0])
            .await
            .unwrap_err();
        assert!(e.is_backend() || e.is_timeout(), "{e}");
    });
}

#[test]
fn the_key_expires_after_its_latest_state_and_never_sooner() {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_connection().unwrap();
    runtime().block_on(async {
        // One token a second: a bucket's state matters until its tat.
        let set = PolicySet::new(vec![
            NamedLimit::new(
                "requests",
                Policy::fixed_window(100, Duration::from_secs(1)).unwrap(),
            )
            .unwrap(),
            NamedLimit::new(
                "tokens",
                Policy::token_bucket(1_000, 1, Duration::from_secs(1)).unwrap(),
            )
            .unwrap()
            .settling(),
            NamedLimit::new(
                "streams",
                Concurrency::new(2, Duration::from_secs(60)).unwrap(),
            )
            .unwrap(),
        ])
        .unwrap();
        let limiter = RedisSetLimiter::connect(set, server_time(&server, "ttl"))
            .await
            .expect("connect");
        let key = limiter.redis_key(b"k");
        let pttl = |c: &mut redis::Connection| -> i64 {
            redis::cmd("PTTL").arg(&key[..]).query(c).unwrap()
        };
        // The lease matters for 60 s, the tokens for 500 s.
        let first = limiter.check_set(b"k", &[1, 500, 1]).await.unwrap();
        let t = pttl(&mut c);
        assert!(t > 499_000 && t <= 501_000, "PTTL {t}");
        // 400 more tokens: the key now lives 900 s.
        let second = limiter.check_set(b"k", &[1, 400, 0]).await.unwrap();
        let t = pttl(&mut c);
        assert!(t > 899_000 && t <= 901_000, "PTTL {t}");
        // A refund of most of them and the lease's release shorten nothing.
        limiter
            .settle(second.receipt.unwrap(), &[1, 0, 0])
            .await
            .unwrap();
        limiter
            .settle(first.receipt.unwrap(), &[1, 0, 0])
            .await
            .unwrap();
        let t = pttl(&mut c);
        assert!(t > 898_000 && t <= 901_000, "PTTL {t}");
        let d = limiter.peek_set(b"k").await.unwrap();
        assert_eq!(d.decisions[2].remaining, 2, "the lease was freed");
    });
}

#[test]
fn a_reloaded_set_keeps_each_policys_state_by_name_and_algorithm() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let clock = ManualClock::new(1_700_000_000_000_000);
        let prefix = fresh_prefix("reload");
        let connect = |limits: Vec<NamedLimit>| {
            let options = RedisOptions::new(Target::Standalone(server.url()))
                .with_prefix(prefix.clone())
                .with_timeout(Duration::from_secs(2))
                .with_clock(clock.clone());
            RedisSetLimiter::connect(PolicySet::new(limits).unwrap(), options)
        };
        let minute = Duration::from_secs(60);
        let window = |limit| Policy::fixed_window(limit, minute).unwrap();
        let streams = || NamedLimit::new("streams", Concurrency::new(2, minute).unwrap()).unwrap();
        let first = connect(vec![
            NamedLimit::new("requests", window(5)).unwrap(),
            streams(),
        ])
        .await
        .expect("connect");
        for _ in 0..3 {
            first.check_set(b"k", &[1, 0]).await.unwrap();
        }
        let held = first.check_set(b"k", &[1, 1]).await.unwrap();
        std::mem::forget(held.receipt);

        // A changed limit and a new policy: the count and the lease stay.
        let reloaded = connect(vec![
            NamedLimit::new("requests", window(10)).unwrap(),
            NamedLimit::new("tokens", Policy::token_bucket(100, 100, minute).unwrap()).unwrap(),
            streams(),
        ])
        .await
        .expect("connect");
        let d = reloaded.check_set(b"k", &[1, 1, 0]).await.unwrap().decision;
        assert!(d.allowed);
        let remaining: Vec<u64> = d.decisions.iter().map(|d| d.remaining).collect();
        assert_eq!(
            remaining,
            [5, 99, 1],
            "4 + 1 requests counted, 1 lease held"
        );

        // A renamed policy reads as new; the section it no longer names is
        // kept for the configuration that still does.
        let renamed = connect(vec![
            NamedLimit::new("calls", window(10)).unwrap(),
            streams(),
        ])
        .await
        .expect("connect");
        let d = renamed.check_set(b"k", &[1, 0]).await.unwrap().decision;
        assert_eq!(d.decisions[0].remaining, 9, "a new count");
        assert_eq!(d.decisions[1].remaining, 1, "the lease is still held");
        let d = reloaded.check_set(b"k", &[1, 1, 0]).await.unwrap().decision;
        let remaining: Vec<u64> = d.decisions.iter().map(|d| d.remaining).collect();
        assert_eq!(remaining, [4, 98, 1], "the requests and tokens kept");

        // A changed algorithm reads as new.
        let sliding = connect(vec![
            NamedLimit::new("requests", Policy::sliding_window(10, minute).unwrap()).unwrap(),
            streams(),
        ])
        .await
        .expect("connect");
        let d = sliding.check_set(b"k", &[1, 0]).await.unwrap().decision;
        assert_eq!(d.decisions[0].remaining, 9);
        let d = first.peek_set(b"k").await.unwrap();
        assert_eq!(d.decisions[0].remaining, 0, "6 of 5 (its limit) counted");
        assert_eq!(d.decisions[1].remaining, 1);
    });
}
