//! Policy sets on Redis: a 3-policy set check with a lease, settled (the
//! settle releases the lease), against a single-policy check, on one
//! private `redis-server` this bench starts on a free loopback port.
//!
//! Run with: `cargo bench -p ratelimit-benches --bench redis_sets`
//!
//! `REDIS_BENCH_SECONDS` sets each measurement's length (default 2),
//! `REDIS_BENCH_ROUNDS` the number of interleaved rounds (default 5),
//! `REDIS_BENCH_TASKS` the concurrent tasks (default 64),
//! `REDIS_BENCH_FUNCTIONS=0` calls both limiters' code as scripts
//! (`EVALSHA`) instead of Redis functions (`FCALL`, the default). Both
//! limiters use
//! the default connection (multiplexed, batched) on a current-thread tokio
//! runtime, over 10,000 keys, all allowed.
//!
//! Each round runs, for the same time each: the single-policy check; the
//! same fixed window as a set of one policy (`check_set(&[1])`: the set
//! machinery's own floor, against which the 3-policy set is also given);
//! a set check taking no lease (`[1, 500, 0]`: the concurrency policy only
//! gates, so nothing piles up); a reservation, a set check taking a lease
//! (`[1, 500, 1]`) then its settle (`[1, 200, 0]`, a refund and the lease's
//! release). Each is reported as a ratio to the single checks of the same
//! round, the reservation also per script operation (a check or a settle:
//! two per reservation), with the median and range over the rounds.
//! `INFO commandstats` gives the calls (`EVALSHA` and `FCALL`) and the µs
//! Redis spent in them, and the commands the scripts ran inside Redis (`MGET`, `SET`,
//! `TIME`, ...), per operation.

// This bench's output is its report.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ratelimit_core::{Concurrency, Limiter, NamedLimit, Policy, PolicySet, SetLimiter};
use ratelimit_redis::{RedisLimiter, RedisOptions, RedisSetLimiter};
use ratelimit_redis_harness::RedisServer;

const KEYS: usize = 10_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn keys() -> Arc<Vec<Vec<u8>>> {
    Arc::new(
        (0..KEYS)
            .map(|i| format!("user:{i}").into_bytes())
            .collect(),
    )
}

/// Operations per second of `tasks` tasks each running `op` on the keys in
/// turn for `seconds`.
async fn rate<F, Fut>(tasks: usize, seconds: u64, op: F) -> f64
where
    F: Fn(Vec<u8>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let keys = keys();
    let end = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let keys = Arc::clone(&keys);
            let op = op.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                let mut i = t * (KEYS / tasks.max(1));
                while Instant::now() < end {
                    op(keys[i % KEYS].clone()).await;
                    i += 1;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.await.expect("a bench task");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// What Redis did since the last reset (then resets): `EVALSHA` and
/// `FCALL` calls, µs inside them, and the commands the scripts ran inside Redis.
struct Stats {
    calls: f64,
    usec: f64,
    inner: f64,
}

fn server_stats(c: &mut redis::Connection) -> Stats {
    let info: String = redis::cmd("INFO").arg("commandstats").query(c).unwrap();
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(c).unwrap();
    let field = |line: &str, name: &str| -> f64 {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let mut stats = Stats {
        calls: 0.0,
        usec: 0.0,
        inner: 0.0,
    };
    for line in info.lines() {
        let Some((name, rest)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        match name {
            "evalsha" | "fcall" => {
                stats.calls += field(rest, "calls=");
                stats.usec += field(rest, "usec=");
            }
            "info" | "config" => {}
            _ => stats.inner += field(rest, "calls="),
        }
    }
    stats
}

fn main() {
    let seconds = env("REDIS_BENCH_SECONDS", 2);
    let rounds = env("REDIS_BENCH_ROUNDS", 5);
    let tasks = env("REDIS_BENCH_TASKS", 64) as usize;
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).expect("a loopback URL");
    let mut stats = client.get_connection().expect("the server is up");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime builds");
    rt.block_on(async {
        let hour = Duration::from_secs(3600);
        let single = Arc::new(
            RedisLimiter::connect(
                Policy::fixed_window(1_000_000_000, hour).unwrap(),
                RedisOptions::standalone(server.url())
                    .with_prefix("single:")
                    .with_functions(env("REDIS_BENCH_FUNCTIONS", 1) == 1),
            )
            .await
            .expect("connect"),
        );
        let set = PolicySet::new(vec![
            NamedLimit::new("requests", Policy::fixed_window(1_000_000_000, hour).unwrap())
                .unwrap(),
            NamedLimit::new(
                "tokens",
                Policy::token_bucket(1_000_000_000, 1_000_000_000, hour).unwrap(),
            )
            .unwrap()
            .settling(),
            NamedLimit::new("streams", Concurrency::new(65_536, hour).unwrap()).unwrap(),
        ])
        .unwrap();
        let sets = Arc::new(
            RedisSetLimiter::connect(
                set,
                RedisOptions::standalone(server.url())
                    .with_prefix("set:")
                    .with_functions(env("REDIS_BENCH_FUNCTIONS", 1) == 1),
            )
                .await
                .expect("connect"),
        );
        let one_policy = Arc::new(
            RedisSetLimiter::connect(
                PolicySet::single(Policy::fixed_window(1_000_000_000, hour).unwrap()),
                RedisOptions::standalone(server.url())
                    .with_prefix("set1:")
                    .with_functions(env("REDIS_BENCH_FUNCTIONS", 1) == 1),
            )
            .await
            .expect("connect"),
        );
        println!(
            "| round | single checks/s | server µs/check | set-of-one checks/s | server µs/check \
             | set checks/s, gate | ratio | ratio to a set of one | server µs/check \
             | reservations/s (check + settle) | ratio | script ops/s | ratio per op \
             | server µs/op | calls/op | commands inside/op |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let (mut gates, mut reservations, mut per_op) = (Vec::new(), Vec::new(), Vec::new());
        let mut gates_to_one_set = Vec::new();
        for round in 1..=rounds {
            server_stats(&mut stats);
            let limiter = Arc::clone(&single);
            let one = rate(tasks, seconds, move |key| {
                let limiter = Arc::clone(&limiter);
                async move {
                    let d = limiter.check(&key, 1).await.expect("a decision");
                    assert!(d.allowed);
                }
            })
            .await;
            let s = server_stats(&mut stats);
            let one_us = s.usec / (one * seconds as f64);
            // The same policy as a set of one.
            let limiter = Arc::clone(&one_policy);
            let set1 = rate(tasks, seconds, move |key| {
                let limiter = Arc::clone(&limiter);
                async move {
                    let check = limiter.check_set(&key, &[1]).await.expect("a check");
                    assert!(check.decision.allowed);
                }
            })
            .await;
            let s = server_stats(&mut stats);
            let set1_us = s.usec / (set1 * seconds as f64);
            // A set check taking no lease (the streams policy gates): a
            // decision that leaves nothing to release.
            let limiter = Arc::clone(&sets);
            let gate = rate(tasks, seconds, move |key| {
                let limiter = Arc::clone(&limiter);
                async move {
                    let check = limiter.check_set(&key, &[1, 500, 0]).await.expect("a check");
                    assert!(check.decision.allowed);
                }
            })
            .await;
            let s = server_stats(&mut stats);
            let gate_us = s.usec / (gate * seconds as f64);
            // A reservation: a check taking a lease, then its settle.
            let limiter = Arc::clone(&sets);
            let three = rate(tasks, seconds, move |key| {
                let limiter = Arc::clone(&limiter);
                async move {
                    let check = limiter.check_set(&key, &[1, 500, 1]).await.expect("a check");
                    let receipt = check.receipt.expect("allowed");
                    limiter.settle(receipt, &[1, 200, 0]).await.expect("a settle");
                }
            })
            .await;
            let s = server_stats(&mut stats);
            let ops = 2.0 * three * seconds as f64;
            let (g, r, p) = (gate / one, three / one, 2.0 * three / one);
            let g1 = gate / set1;
            gates.push(g);
            gates_to_one_set.push(g1);
            reservations.push(r);
            per_op.push(p);
            println!(
                "| {round} | {one:.0} | {one_us:.2} | {set1:.0} | {set1_us:.2} | {gate:.0} | {g:.2} \
                 | {g1:.2} | {gate_us:.2} | {three:.0} | {r:.2} | {:.0} | {p:.2} | {:.2} | {:.3} | {:.2} |",
                2.0 * three,
                s.usec / ops,
                s.calls / ops,
                s.inner / ops
            );
        }
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let summary = |name: &str, against: &str, mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            println!(
                "{tasks} tasks, {name} / {against}: median {:.2} (range {:.2}-{:.2}) over {rounds} rounds",
                v[v.len() / 2],
                v[0],
                v[v.len() - 1],
            );
        };
        println!();
        summary("set check (gate)", "single check", gates);
        summary("set check (gate)", "set of one", gates_to_one_set);
        summary("reservation (check + settle)", "single check", reservations);
        summary("set script op (check or settle)", "single check", per_op);
        println!(
            "load average {}",
            load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        );
    });
}
