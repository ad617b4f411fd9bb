//! Bytes per key at one million keys: `ratelimit-memory` and `governor`'s
//! keyed limiter, for `u64` keys and 20-byte string keys.
//!
//! Run with: `cargo bench -p ratelimit-benches --bench memory_bytes`
//!
//! Each case runs in a child process of its own, so one case's freed
//! memory cannot be reused by the next. Two figures per case: heap bytes
//! allocated and not freed (a counting global allocator: exact, but blind
//! to the allocator's own rounding and headers), and the growth of the
//! resident set (`/proc/self/statm`: what the machine actually pays,
//! rounded to pages; Linux only).

// A report binary: printing the table is its purpose.
#![allow(clippy::print_stdout)]

use std::alloc::System;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::process::Command;

use cap::Cap;
use governor::clock::FakeRelativeClock;
use governor::{Quota, RateLimiter};
use ratelimit_core::{ManualClock, Policy};
use ratelimit_memory::MemoryLimiter;

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

const KEYS: u64 = 1_000_000;
const START: u64 = 1_700_000_000_000_000;
const PAGE: u64 = 4096;

const CASES: [&str; 6] = [
    "governor/u64",
    "governor/string20",
    "token_bucket/u64",
    "token_bucket/string20",
    "fixed_window/u64",
    "sliding_window/u64",
];

/// The resident set, in bytes.
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * PAGE
}

fn string_key(i: u64) -> String {
    format!("{i:020}")
}

fn policy(algorithm: &str) -> Policy {
    let (limit, window) = (u64::from(u32::MAX), std::time::Duration::from_secs(1));
    match algorithm {
        "token_bucket" => Policy::token_bucket(limit, 1_000, window),
        "fixed_window" => Policy::fixed_window(limit, window),
        _ => Policy::sliding_window(limit, window),
    }
    .expect("bench policies are in the exact domain")
}

fn quota() -> Quota {
    Quota::per_second(NonZeroU32::new(1_000).unwrap()).allow_burst(NonZeroU32::MAX)
}

/// Fills one limiter with a million keys and prints
/// `case allocated_bytes resident_bytes`.
fn measure(case: &str) {
    let (heap0, rss0) = (ALLOCATOR.allocated(), resident());
    let (algorithm, keys) = case.split_once('/').expect("case names are algorithm/keys");
    // The limiter is kept alive until both figures are read.
    let keep: Box<dyn std::any::Any> = match (algorithm, keys) {
        ("governor", "u64") => {
            let limiter = RateLimiter::dashmap_with_clock(quota(), FakeRelativeClock::default());
            for i in 0..KEYS {
                assert!(limiter.check_key(&i).is_ok());
            }
            Box::new(limiter)
        }
        ("governor", _) => {
            let limiter = RateLimiter::dashmap_with_clock(quota(), FakeRelativeClock::default());
            for i in 0..KEYS {
                assert!(limiter.check_key(&string_key(i)).is_ok());
            }
            Box::new(limiter)
        }
        (_, "u64") => {
            let limiter = MemoryLimiter::with_clock(policy(algorithm), ManualClock::new(START));
            for i in 0..KEYS {
                assert!(limiter.check_sync(&i.to_le_bytes(), 1).unwrap().allowed);
            }
            Box::new(limiter)
        }
        _ => {
            let limiter = MemoryLimiter::with_clock(policy(algorithm), ManualClock::new(START));
            for i in 0..KEYS {
                assert!(
                    limiter
                        .check_sync(string_key(i).as_bytes(), 1)
                        .unwrap()
                        .allowed
                );
            }
            Box::new(limiter)
        }
    };
    let heap = ALLOCATOR.allocated() - heap0;
    let rss = resident().saturating_sub(rss0);
    black_box(&keep);
    println!("{case} {heap} {rss}");
}

fn main() {
    if let Some(case) = std::env::args()
        .skip(1)
        .find(|a| CASES.contains(&a.as_str()))
    {
        measure(&case);
        return;
    }
    let exe = std::env::current_exe().expect("the bench binary knows its path");
    println!("| keys at 1,000,000 | heap bytes/key | resident bytes/key |");
    println!("|---|---:|---:|");
    for case in CASES {
        let out = Command::new(&exe)
            .arg(case)
            .output()
            .expect("the child runs");
        let line = String::from_utf8_lossy(&out.stdout);
        let mut fields = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse::<u64>().unwrap_or(0));
        let (heap, rss) = (fields.next().unwrap_or(0), fields.next().unwrap_or(0));
        println!(
            "| {case} | {:.1} | {:.1} |",
            heap as f64 / KEYS as f64,
            rss as f64 / KEYS as f64
        );
    }
}
