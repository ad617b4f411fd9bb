//! Separate processes sharing one Redis through `RedisSetLimiter` never
//! hold more than `N` leases of a key at once, and never admit more than
//! the set allows.
//!
//! This binary is its own worker (as `processes.rs`): run plainly, it
//! starts a private `redis-server`, re-runs itself as three worker
//! processes, and adds up what they report. Each worker's tasks acquire a
//! request and a stream, count themselves in a Redis counter while they
//! hold it (so the counter never exceeds the leases held), and settle.
//! All share one timeline through a manual clock set to the same instant,
//! so the window cannot turn and exactly the limit must pass.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{Concurrency, ManualClock, NamedLimit, Policy, PolicySet, Reservation};
use ratelimit_redis::{RedisOptions, RedisSetLimiter};
use ratelimit_redis_harness::RedisServer;

const WORKER: &str = "RATELIMIT_REDIS_SET_WORKER";
const LIMIT: u64 = 90;
const STREAMS: u64 = 3;
const WORKERS: usize = 3;
const TASKS: usize = 6;
const NOW: u64 = 1_700_000_000_000_000;

fn set() -> PolicySet {
    PolicySet::new(vec![
        NamedLimit::new(
            "requests",
            Policy::fixed_window(LIMIT, Duration::from_secs(60)).unwrap(),
        )
        .unwrap(),
        NamedLimit::new(
            "streams",
            Concurrency::new(STREAMS, Duration::from_secs(60)).unwrap(),
        )
        .unwrap(),
    ])
    .expect("a valid set")
}

fn main() {
    match std::env::var(WORKER) {
        Ok(task) => worker(&task),
        Err(_) => orchestrate(),
    }
}

fn orchestrate() {
    let server = RedisServer::start();
    let prefix = format!("setprocs-{}:", std::process::id());
    let (mut total, mut most) = (0, 0);
    for text in support::run_workers(WORKER, WORKERS, &format!("{} {prefix}", server.url())) {
        let (admitted, held) = text
            .split_once(' ')
            .and_then(|(a, h)| Some((a.parse::<u64>().ok()?, h.parse::<u64>().ok()?)))
            .unwrap_or_else(|| panic!("a worker printed {text:?}"));
        total += admitted;
        most = most.max(held);
    }
    assert_eq!(total, LIMIT, "requests admitted by {WORKERS} processes");
    assert!(
        (1..=STREAMS).contains(&most),
        "{most} streams held at once, limit {STREAMS}"
    );
    #[allow(clippy::print_stdout)]
    {
        println!(
            "separate processes: {total} admitted (limit {LIMIT}), at most {most} streams held \
             at once (limit {STREAMS}): ok"
        );
    }
}

fn worker(task: &str) {
    let (url, prefix) = task.split_once(' ').expect("\"<url> <prefix>\"");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime builds");
    let (admitted, most) = rt.block_on(async {
        let options = RedisOptions::standalone(url)
            .with_prefix(prefix)
            .with_timeout(Duration::from_secs(5))
            .with_clock(ManualClock::new(NOW));
        let limiter = Arc::new(
            RedisSetLimiter::connect(set(), options)
                .await
                .expect("the worker connects"),
        );
        let client = redis::Client::open(url).expect("a valid URL");
        let counter = format!("{prefix}holders");
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let limiter = Arc::clone(&limiter);
            let mut redis = client
                .get_multiplexed_async_connection()
                .await
                .expect("a connection");
            let counter = counter.clone();
            tasks.push(tokio::spawn(async move {
                let (mut admitted, mut most) = (0u64, 0u64);
                for _ in 0..100_000 {
                    match Reservation::acquire(Arc::clone(&limiter), b"shared", &[1, 1])
                        .await
                        .expect("Redis decides")
                    {
                        Ok(reservation) => {
                            admitted += 1;
                            let holders: u64 = redis::cmd("INCR")
                                .arg(&counter)
                                .query_async(&mut redis)
                                .await
                                .expect("INCR");
                            most = most.max(holders);
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            let _: i64 = redis::cmd("DECR")
                                .arg(&counter)
                                .query_async(&mut redis)
                                .await
                                .expect("DECR");
                            reservation.settle(&[1, 0]).await.expect("a settle");
                        }
                        // The requests are spent: done.
                        Err(denied) if !denied.decisions[0].allowed => break,
                        // Every stream is taken: try again.
                        Err(_) => tokio::task::yield_now().await,
                    }
                }
                (admitted, most)
            }));
        }
        let (mut admitted, mut most) = (0, 0);
        for task in tasks {
            let (a, m) = task.await.expect("a worker task finishes");
            admitted += a;
            most = most.max(m);
        }
        (admitted, most)
    });
    #[allow(clippy::print_stdout)]
    {
        println!("{admitted} {most}");
    }
}
