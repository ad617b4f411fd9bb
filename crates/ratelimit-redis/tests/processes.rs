//! Separate processes sharing one Redis never admit more than the limit in
//! total.
//!
//! This binary is its own worker: run plainly, it starts a private
//! `redis-server`, re-runs itself as three worker processes (told what to
//! do through `RATELIMIT_REDIS_WORKER`), and adds up what they admitted.
//! Each worker uses two limiters with their own connections. All share one
//! timeline through a manual clock set to the same instant, so the window
//! cannot turn during the run and exactly the limit must pass.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{Limiter, ManualClock, Policy};
use ratelimit_redis::{ConnectionMode, RedisLimiter, RedisOptions};
use ratelimit_redis_harness::RedisServer;

const WORKER: &str = "RATELIMIT_REDIS_WORKER";
const LIMIT: u64 = 150;
const WORKERS: usize = 3;
const ATTEMPTS_PER_LIMITER: u64 = 100;
const NOW: u64 = 1_700_000_000_000_000;

fn policy() -> Policy {
    Policy::fixed_window(LIMIT, Duration::from_secs(60)).expect("a valid policy")
}

fn main() {
    match std::env::var(WORKER) {
        Ok(task) => worker(&task),
        Err(_) => orchestrate(),
    }
}

fn orchestrate() {
    let server = RedisServer::start();
    let prefix = format!("procs-{}:", std::process::id());
    let mut total = 0;
    for text in support::run_workers(WORKER, WORKERS, &format!("{} {prefix}", server.url())) {
        total += text
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("a worker printed {text:?}"));
    }
    let attempts = WORKERS as u64 * 2 * ATTEMPTS_PER_LIMITER;
    assert_eq!(total, LIMIT, "{attempts} attempts from {WORKERS} processes");
    // Printing is this binary's report, as a harness's would be.
    #[allow(clippy::print_stdout)]
    {
        println!("separate processes: {total} of {attempts} admitted, limit {LIMIT}: ok");
    }
}

fn worker(task: &str) {
    let (url, prefix) = task.split_once(' ').expect("\"<url> <prefix>\"");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime builds");
    let admitted = rt.block_on(async {
        let mut tasks = Vec::new();
        for mode in [ConnectionMode::Multiplexed, ConnectionMode::Pool] {
            let options = RedisOptions::standalone(url)
                .with_prefix(prefix)
                .with_timeout(Duration::from_secs(5))
                .with_connection_mode(mode)
                .with_clock(ManualClock::new(NOW));
            let limiter = Arc::new(
                RedisLimiter::connect(policy(), options)
                    .await
                    .expect("the worker connects"),
            );
            for _ in 0..4 {
                let limiter = Arc::clone(&limiter);
                tasks.push(tokio::spawn(async move {
                    let mut admitted = 0u64;
                    for _ in 0..ATTEMPTS_PER_LIMITER / 4 {
                        let d = limiter.check_one(b"shared").await.expect("Redis decides");
                        admitted += u64::from(d.allowed);
                    }
                    admitted
                }));
            }
        }
        let mut admitted = 0;
        for task in tasks {
            admitted += task.await.expect("a worker task finishes");
        }
        admitted
    });
    #[allow(clippy::print_stdout)]
    {
        println!("{admitted}");
    }
}
