//! Shared helpers of the Redis integration tests.
//!
//! The servers themselves come from `ratelimit-redis-harness`: private
//! processes on free loopback ports, killed on drop.

#![allow(dead_code, unreachable_pub)] // each test binary uses a subset

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{Limiter, ManualClock, Policy};
use ratelimit_redis::{ConnectionMode, RedisLimiter, RedisOptions, Target};

/// A multi-threaded runtime with I/O and timers, as an application has.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime builds")
}

/// A key prefix no other limiter of this process uses, so limiters sharing
/// a server start fresh.
pub fn fresh_prefix(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}-{}-{tag}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Options for `target` on a manual clock, with a fresh prefix and a
/// timeout generous enough for a loaded two-core machine.
pub fn options(target: &Target, clock: &ManualClock, tag: &str) -> RedisOptions {
    RedisOptions::new(target.clone())
        .with_prefix(fresh_prefix(tag))
        .with_timeout(Duration::from_secs(2))
        .with_clock(clock.clone())
}

/// A fresh limiter for the conformance suite's `make` functions.
pub async fn make(
    target: Target,
    mode: ConnectionMode,
    policy: Policy,
    clock: ManualClock,
) -> Arc<dyn Limiter> {
    let options = options(&target, &clock, policy.algorithm_name()).with_connection_mode(mode);
    Arc::new(
        RedisLimiter::connect(policy, options)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test Redis failed: {e}")),
    )
}

/// Random multi-key sequences over the awkward keys, for the differential
/// tests: any policy, any start, clocks going back and resets included.
///
/// Sequences whose clock passes `MAX_TIMESTAMP_US` (2^52 µs, the year
/// 2112) are left out: past it the Rust functions saturate while Lua's
/// doubles round, and SPEC guarantees agreement only below it. The
/// strategies reach it with huge token-bucket spans times 50.
pub fn differential_cases(
) -> impl proptest::strategy::Strategy<Value = (Policy, u64, Vec<ratelimit_conformance::ops::Step>)>
{
    use proptest::prelude::*;
    use ratelimit_conformance::strategy::{
        any_policy, awkward_keys, start_time, steps, SequenceOptions,
    };
    any_policy()
        .prop_flat_map(|p| {
            let keys = awkward_keys().len();
            (
                Just(p),
                start_time(),
                steps(&p, SequenceOptions::default().with_keys(keys)),
            )
        })
        .prop_filter("the clock leaves the exact domain", |(_, start, steps)| {
            let mut now = *start;
            steps.iter().all(|step| {
                now = step.apply_time(now);
                now < ratelimit_core::MAX_TIMESTAMP_US
            })
        })
}

/// Re-runs this test binary as `workers` processes, each told `task`
/// through the environment variable `var`, and returns what each printed,
/// trimmed, once all have succeeded: the orchestrating half of a test
/// binary that is its own worker.
pub fn run_workers(var: &str, workers: usize, task: &str) -> Vec<String> {
    use std::process::{Command, Stdio};

    let exe = std::env::current_exe().expect("the test binary's path");
    let children: Vec<_> = (0..workers)
        .map(|_| {
            Command::new(&exe)
                .env(var, task)
                .stdout(Stdio::piped())
                .spawn()
                .expect("a worker process starts")
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().expect("the worker finishes");
            assert!(out.status.success(), "a worker failed: {}", out.status);
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
        .collect()
}
