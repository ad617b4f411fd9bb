//! The pure policy functions: the floor every backend's hot path sits on.
//!
//! Run with: `cargo bench -p ratelimit-benches --bench core`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_main, Criterion};
use ratelimit_core::{Algorithm, FixedWindow, SlidingWindow, TokenBucket};

fn bench_policy<A: Algorithm>(c: &mut Criterion, name: &str, policy: A) {
    let mut group = c.benchmark_group(format!("core/{name}"));
    let start = 1_700_000_000_000_000u64;
    group.bench_function("check_allowed", |b| {
        let mut state = A::State::default();
        let mut now = start;
        b.iter(|| {
            // One unit per µs-spaced call keeps a 1000-per-ms policy allowed.
            now += 1_000;
            let (d, next) = policy.check(black_box(&state), black_box(now), 1).unwrap();
            state = next;
            black_box(d)
        });
    });
    group.bench_function("check_denied", |b| {
        let (_, full) = policy
            .check(&A::State::default(), start, policy.limit())
            .unwrap();
        b.iter(|| black_box(policy.check(black_box(&full), black_box(start), 1).unwrap()));
    });
    group.finish();
}

fn policies(c: &mut Criterion) {
    let window = Duration::from_secs(1);
    bench_policy(c, "fixed_window", FixedWindow::new(1_000, window).unwrap());
    bench_policy(
        c,
        "sliding_window",
        SlidingWindow::new(1_000, window).unwrap(),
    );
    bench_policy(
        c,
        "token_bucket",
        TokenBucket::new(1_000, 1_000, window).unwrap(),
    );
}

// criterion_group! defines an undocumented `pub fn`; a private module keeps
// it out of the missing-docs lint.
mod group {
    criterion::criterion_group!(benches, super::policies);
}
criterion_main!(group::benches);
