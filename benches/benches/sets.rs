//! Policy sets on `ratelimit-memory` beside a single-policy check, in the
//! same run: what a set check and a lease cost, as ratios to one
//! `MemoryLimiter::check_sync`.
//!
//! Run with: `cargo bench -p ratelimit-benches --bench sets`
//!
//! Every subject runs on a `ManualClock` that does not move, over the same
//! 1,024 `u64` keys (8 bytes) taken in turn, through the public API only.
//! The limits are far above what a run takes, so every check is allowed.
//! Subjects, one group:
//! - `single`: `MemoryLimiter::check_sync`, a fixed window, cost 1;
//! - `set1`: the same fixed window as a set of one policy
//!   (`MemorySetLimiter::check_set_sync`, cost `[1]`): the set machinery's
//!   own floor, to which a 3-policy set adds two policies;
//! - `set3_sliding_gate` / `set3_bucket_gate`: a set of requests (fixed
//!   window) + tokens (settling sliding window or token bucket) + streams
//!   (concurrency), costs `[1, 100, 0]`: the streams policy only gates, so
//!   no lease is left behind;
//! - `set3_sliding_lease`: costs `[1, 100, 1]`, the receipt then released
//!   (`SetLimiter::release`, what dropping a `Reservation` does);
//! - `lease`: a set of one concurrency policy, `check_set_sync` then
//!   `release`;
//! - `lease_reservation`: the same through `Reservation::acquire` and drop,
//!   on a current-thread runtime (the future never waits).
//!
//! A second group, `sets_pure`, runs the pure functions under `single`,
//! `set1` and `set3_sliding_gate` on one state the bench holds (no key, no
//! table, no lock), returning the answer or (`*_read_in_place`) reading
//! two of its fields: what the store adds, and what the answer costs.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_main, Criterion};
use ratelimit_core::{
    Algorithm, Clock, Concurrency, FixedWindow, ManualClock, NamedLimit, Policy, PolicySet,
    Reservation, SetLimiter, SetState,
};
use ratelimit_memory::{MemoryLimiter, MemorySetLimiter};

/// A realistic epoch time for the manual clock, in µs.
const START: u64 = 1_700_000_000_000_000;
/// Keys taken in turn.
const KEYS: u64 = 1_024;
/// The largest limit (`2^32 - 1`): no run exhausts it.
const BIG: u64 = u32::MAX as u64;

fn set3(tokens: Policy) -> PolicySet {
    let hour = Duration::from_secs(3600);
    PolicySet::new(vec![
        NamedLimit::new(
            "requests",
            Policy::fixed_window(BIG, Duration::from_secs(60)).unwrap(),
        )
        .unwrap(),
        NamedLimit::new("tokens", tokens).unwrap().settling(),
        NamedLimit::new("streams", Concurrency::new(64, hour).unwrap()).unwrap(),
    ])
    .unwrap()
}

fn streams() -> PolicySet {
    let c = Concurrency::new(64, Duration::from_secs(3600)).unwrap();
    PolicySet::new(vec![NamedLimit::new("streams", c).unwrap()]).unwrap()
}

/// The next key of the rotation.
fn next(i: &mut u64) -> [u8; 8] {
    *i = (*i + 1) % KEYS;
    i.to_le_bytes()
}

fn bench(c: &mut Criterion) {
    let clock = ManualClock::new(START);
    let second = Duration::from_secs(1);
    let single = MemoryLimiter::with_clock(
        Policy::fixed_window(BIG, Duration::from_secs(60)).unwrap(),
        clock.clone(),
    );
    let sliding = MemorySetLimiter::with_clock(
        set3(Policy::sliding_window(BIG, second).unwrap()),
        clock.clone(),
    );
    let bucket = MemorySetLimiter::with_clock(
        set3(Policy::token_bucket(BIG, 1_000_000, second).unwrap()),
        clock.clone(),
    );
    let one = MemorySetLimiter::with_clock(
        PolicySet::single(Policy::fixed_window(BIG, Duration::from_secs(60)).unwrap()),
        clock.clone(),
    );
    let lease = Arc::new(MemorySetLimiter::with_clock(streams(), clock.clone()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    let mut g = c.benchmark_group("sets");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    let mut i = 0;
    g.bench_function("single", |b| {
        b.iter(|| single.check_sync(black_box(&next(&mut i)), 1).unwrap())
    });
    g.bench_function("set1", |b| {
        b.iter(|| one.check_set_sync(black_box(&next(&mut i)), &[1]).unwrap())
    });
    g.bench_function("set3_sliding_gate", |b| {
        b.iter(|| {
            sliding
                .check_set_sync(black_box(&next(&mut i)), &[1, 100, 0])
                .unwrap()
        })
    });
    g.bench_function("set3_bucket_gate", |b| {
        b.iter(|| {
            bucket
                .check_set_sync(black_box(&next(&mut i)), &[1, 100, 0])
                .unwrap()
        })
    });
    g.bench_function("set3_sliding_lease", |b| {
        b.iter(|| {
            let check = sliding
                .check_set_sync(black_box(&next(&mut i)), &[1, 100, 1])
                .unwrap();
            sliding.release(check.receipt.unwrap());
            check.decision
        })
    });
    g.bench_function("lease", |b| {
        b.iter(|| {
            let check = lease
                .check_set_sync(black_box(&next(&mut i)), &[1])
                .unwrap();
            lease.release(check.receipt.unwrap());
            check.decision
        })
    });
    g.bench_function("lease_reservation", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let key = next(&mut i);
                let held = Reservation::acquire(Arc::clone(&lease), black_box(&key), &[1])
                    .await
                    .unwrap()
                    .unwrap();
                drop(held);
            })
        })
    });
    g.finish();
    assert_eq!(lease.leases_held(&next(&mut i)), 0);
    pure(c, &clock);
}

/// The pure functions under the same subjects, on one state held by the
/// bench (no key, no table, no lock): what the store adds, and what the
/// set's answer costs by itself.
fn pure(c: &mut Criterion, clock: &ManualClock) {
    let now = clock.now_micros();
    let minute = Duration::from_secs(60);
    let fixed = FixedWindow::new(BIG, minute).unwrap();
    let one = PolicySet::single(Policy::FixedWindow(fixed));
    let three = set3(Policy::sliding_window(BIG, Duration::from_secs(1)).unwrap());
    let mut g = c.benchmark_group("sets_pure");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    let mut state = <FixedWindow as Algorithm>::State::default();
    g.bench_function("single", |b| {
        b.iter(|| {
            let (d, next) = fixed.check(black_box(&state), black_box(now), 1).unwrap();
            state = next;
            d
        })
    });
    let mut no_lease = || unreachable!("no lease is taken");
    for (name, set, costs) in [
        ("set1", &one, &[1][..]),
        // One state takes every check here, so one token each (the same
        // path as 100): `BIG` outlasts any run.
        ("set3_sliding_gate", &three, &[1, 1, 0]),
    ] {
        let mut state = SetState::aligned(set);
        let mut check = || {
            set.check_set(
                black_box(b"key-0001"),
                &mut state,
                black_box(now),
                costs,
                &mut no_lease,
            )
            .unwrap()
        };
        g.bench_function(name, |b| b.iter(&mut check));
        g.bench_function(format!("{name}_read_in_place"), |b| {
            b.iter(|| {
                let check = check();
                (
                    check.decision.allowed,
                    check.decision.decisions[0].remaining,
                )
            })
        });
        assert!(check().decision.allowed, "{name}: every check allowed");
    }
    g.finish();
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
}

criterion_main!(benches);
