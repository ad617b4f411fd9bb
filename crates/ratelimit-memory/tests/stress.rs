//! Several threads on a few keys never admit more than the policy allows.
//!
//! Time moves in phases: a `ManualClock` is set, every thread runs its
//! checks at that instant, a barrier, and the clock moves on. So the
//! instant of every admitted cost is known exactly, while within a phase
//! the threads race on the same keys as hard as they can.

use std::sync::Barrier;
use std::time::Duration;

use ratelimit_core::{ManualClock, Policy, ReferenceLimiter};
use ratelimit_memory::MemoryLimiter;

const THREADS: usize = 4;
const KEYS: usize = 3;
const CHECKS_PER_PHASE: usize = 60;
const START: u64 = 1_700_000_000_000_000;

/// Admitted cost per phase per key.
type Admitted = Vec<[u64; KEYS]>;

/// A cheap deterministic generator, so each thread has its own order of
/// keys and costs.
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *seed >> 33
}

/// Runs the phases at `times` with costs drawn from `1..=max_cost`;
/// returns the admitted cost per phase per key, summed over threads.
fn hammer(policy: Policy, times: &[u64], max_cost: u64) -> Admitted {
    let clock = ManualClock::new(times[0]);
    let limiter = MemoryLimiter::with_clock(policy, clock.clone());
    let barrier = Barrier::new(THREADS + 1);
    let per_thread: Vec<Admitted> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let limiter = limiter.clone();
                let barrier = &barrier;
                s.spawn(move || {
                    let mut seed = t as u64 + 1;
                    let mut admitted = vec![[0u64; KEYS]; times.len()];
                    for phase in &mut admitted {
                        barrier.wait();
                        for _ in 0..CHECKS_PER_PHASE {
                            let key = (lcg(&mut seed) as usize) % KEYS;
                            let cost = 1 + lcg(&mut seed) % max_cost;
                            let d = limiter.check_sync(&[key as u8], cost).unwrap();
                            if d.allowed {
                                phase[key] += cost;
                            }
                        }
                        barrier.wait();
                    }
                    admitted
                })
            })
            .collect();
        for &t in times {
            clock.set(t);
            barrier.wait();
            barrier.wait();
        }
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut total = vec![[0u64; KEYS]; times.len()];
    for admitted in per_thread {
        for (sum, phase) in total.iter_mut().zip(admitted) {
            for k in 0..KEYS {
                sum[k] += phase[k];
            }
        }
    }
    total
}

/// Phase instants from `START`, `step` apart.
fn phases(count: usize, step: u64) -> Vec<u64> {
    (0..count as u64).map(|i| START + i * step).collect()
}

/// With unit costs the count admitted per phase does not depend on the
/// order of the racing checks: it must equal the reference's, run
/// sequentially with the same number of checks per key and phase.
fn assert_exact(policy: Policy, times: &[u64]) {
    let got = hammer(policy, times, 1);
    // Each thread's key choices are deterministic, so replaying them gives
    // the requests per phase per key.
    let mut requests = vec![[0u64; KEYS]; times.len()];
    for t in 0..THREADS {
        let mut seed = t as u64 + 1;
        for phase in &mut requests {
            for _ in 0..CHECKS_PER_PHASE {
                let key = (lcg(&mut seed) as usize) % KEYS;
                let _cost = lcg(&mut seed);
                phase[key] += 1;
            }
        }
    }
    let clock = ManualClock::new(times[0]);
    let reference = ReferenceLimiter::with_clock(policy, clock.clone());
    for (i, &t) in times.iter().enumerate() {
        clock.set(t);
        for key in 0..KEYS {
            let admitted = (0..requests[i][key])
                .filter(|_| reference.check_sync(&[key as u8], 1).unwrap().allowed)
                .count() as u64;
            assert_eq!(
                got[i][key], admitted,
                "{policy:?}: phase {i} key {key} admitted {} concurrently, {admitted} sequentially",
                got[i][key]
            );
        }
    }
}

#[test]
fn unit_costs_admit_exactly_what_a_sequential_run_admits() {
    let w = 1_000_000;
    assert_exact(
        Policy::fixed_window(50, Duration::from_secs(1)).unwrap(),
        &phases(30, w / 7),
    );
    assert_exact(
        Policy::sliding_window(50, Duration::from_secs(1)).unwrap(),
        &phases(30, w / 7),
    );
    assert_exact(
        Policy::token_bucket(50, 10, Duration::from_secs(1)).unwrap(),
        &phases(30, 300_000),
    );
}

/// What `key` was admitted in each aligned window of `w` µs, by window
/// index.
fn per_window(
    admitted: &Admitted,
    times: &[u64],
    key: usize,
    w: u64,
) -> std::collections::BTreeMap<u64, u64> {
    let mut sums = std::collections::BTreeMap::new();
    for (phase, &t) in admitted.iter().zip(times) {
        *sums.entry(t / w).or_default() += phase[key];
    }
    sums
}

#[test]
fn fixed_window_never_admits_more_than_the_limit_per_window() {
    let (limit, w) = (40, 1_000_000);
    let policy = Policy::fixed_window(limit, Duration::from_micros(w)).unwrap();
    let times = phases(40, w / 5 + 1);
    let admitted = hammer(policy, &times, 4);
    for key in 0..KEYS {
        for (window, sum) in per_window(&admitted, &times, key, w) {
            assert!(sum <= limit, "key {key} window {window}: {sum} > {limit}");
            assert!(sum > 0, "key {key} window {window}: nothing admitted");
        }
    }
}

#[test]
fn sliding_window_never_admits_more_than_the_limit_per_aligned_window() {
    let (limit, w) = (40, 1_000_000);
    let policy = Policy::sliding_window(limit, Duration::from_micros(w)).unwrap();
    let times = phases(40, w / 5 + 1);
    let admitted = hammer(policy, &times, 4);
    for key in 0..KEYS {
        for (window, sum) in per_window(&admitted, &times, key, w) {
            assert!(sum <= limit, "key {key} window {window}: {sum} > {limit}");
        }
        // Any interval of length W holds at most 2L.
        for (i, &a) in times.iter().enumerate() {
            let sum: u64 = admitted[i..]
                .iter()
                .zip(&times[i..])
                .take_while(|(_, &t)| t < a + w)
                .map(|(phase, _)| phase[key])
                .sum();
            assert!(sum <= 2 * limit, "key {key} from {a}: {sum} > 2L");
        }
    }
}

#[test]
fn token_bucket_never_admits_more_than_capacity_plus_refill() {
    // 30 tokens, one every 50 ms.
    let (capacity, interval) = (30u64, 50_000u64);
    let policy = Policy::token_bucket(capacity, 20, Duration::from_secs(1)).unwrap();
    let times = phases(40, 130_000);
    let admitted = hammer(policy, &times, 3);
    for key in 0..KEYS {
        for (i, &a) in times.iter().enumerate() {
            let mut sum = 0;
            for (phase, &b) in admitted[i..].iter().zip(&times[i..]) {
                sum += phase[key];
                let bound = capacity + (b - a) / interval;
                assert!(
                    sum <= bound,
                    "key {key} from {a} to {b}: {sum} admitted > bound {bound}"
                );
            }
        }
    }
}
