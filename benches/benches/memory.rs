//! `ratelimit-memory` against `governor`'s keyed limiter, in the same run.
//!
//! Run with: `cargo bench -p ratelimit-benches --bench memory`
//!
//! Both sides run on a fake clock that only moves when told to
//! (`ManualClock`, governor's `FakeRelativeClock`), so the figures compare
//! the limiters and not two ways of reading the time; one extra group
//! compares the default clocks. governor stores `u64` keys as they are;
//! `ratelimit-memory` is given the same `u64` as its 8 little-endian bytes.
//! Every group holds one bench per subject: `governor`, then this
//! workspace's `token_bucket` (governor's algorithm, the ratio that the
//! goals are set on), `fixed_window` and `sliding_window`.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_main, BenchmarkGroup, Criterion};
use governor::clock::{Clock as GovernorClock, FakeRelativeClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use ratelimit_core::{ManualClock, Policy, SystemClock};
use ratelimit_memory::MemoryLimiter;

/// A realistic epoch time for the manual clock, in µs.
const START: u64 = 1_700_000_000_000_000;
/// Keys in the "many keys" groups.
const MANY: u64 = 1_000_000;
/// Keys shared by the two threads.
const SHARED: u64 = 1_024;

/// Whether the checks of a group are allowed or denied.
#[derive(Clone, Copy)]
enum Path {
    /// A limit no bench can exhaust: `u32::MAX` per second.
    Allowed,
    /// One unit per hour, taken before measuring.
    Denied,
}

/// One limiter under test: a check of cost one on a `u64` key.
trait Subject: Sync {
    fn check(&self, key: u64) -> bool;
}

type Governor = RateLimiter<
    u64,
    DashMapStateStore<u64>,
    FakeRelativeClock,
    NoOpMiddleware<<FakeRelativeClock as GovernorClock>::Instant>,
>;

impl Subject for Governor {
    #[inline]
    fn check(&self, key: u64) -> bool {
        self.check_key(&key).is_ok()
    }
}

impl Subject for governor::DefaultKeyedRateLimiter<u64> {
    #[inline]
    fn check(&self, key: u64) -> bool {
        self.check_key(&key).is_ok()
    }
}

impl<C: ratelimit_core::Clock> Subject for MemoryLimiter<C> {
    #[inline]
    fn check(&self, key: u64) -> bool {
        self.check_sync(&key.to_le_bytes(), 1)
            .expect("a cost of one is valid")
            .allowed
    }
}

fn quota(path: Path) -> Quota {
    match path {
        Path::Allowed => {
            Quota::per_second(NonZeroU32::new(1_000).unwrap()).allow_burst(NonZeroU32::MAX)
        }
        Path::Denied => Quota::per_hour(NonZeroU32::MIN),
    }
}

fn governor(path: Path) -> Governor {
    RateLimiter::dashmap_with_clock(quota(path), FakeRelativeClock::default())
}

/// The policy of `algorithm` equivalent to `quota(path)`.
fn policy(algorithm: &str, path: Path) -> Policy {
    let (limit, period) = match path {
        Path::Allowed => (u64::from(u32::MAX), Duration::from_secs(1)),
        Path::Denied => (1, Duration::from_secs(3600)),
    };
    match (algorithm, path) {
        ("token_bucket", Path::Allowed) => Policy::token_bucket(limit, 1_000, period),
        ("token_bucket", Path::Denied) => Policy::token_bucket(1, 1, period),
        ("fixed_window", _) => Policy::fixed_window(limit, period),
        _ => Policy::sliding_window(limit, period),
    }
    .expect("bench policies are in the exact domain")
}

fn ours(algorithm: &str, path: Path) -> MemoryLimiter<ManualClock> {
    MemoryLimiter::with_clock(policy(algorithm, path), ManualClock::new(START))
}

const ALGORITHMS: [&str; 3] = ["token_bucket", "fixed_window", "sliding_window"];

/// `n` keys in `0..range`, uniformly random (splitmix64, fixed seed).
fn random_keys(n: usize, range: u64) -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    (0..n)
        .map(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % range
        })
        .collect()
}

/// Takes one unit of every key in `keys` (their only unit on the denied
/// path) and checks that the last one is then denied on that path.
fn prime<S: Subject>(subject: &S, path: Path, keys: impl Iterator<Item = u64>) {
    let mut last = None;
    for key in keys {
        assert!(subject.check(key), "a fresh key admits one unit");
        last = Some(key);
    }
    if let (Path::Denied, Some(key)) = (path, last) {
        assert!(!subject.check(key), "the denied path denies");
    }
}

/// The group's type, as the helpers below take it.
type Group<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// Builds and primes a subject the first time the bench runs (so a
/// filtered-out bench costs nothing), then reuses it for every sample.
fn lazily<S: Subject>(
    slot: &mut Option<S>,
    make: impl FnOnce() -> S,
    path: Path,
    keys: impl Iterator<Item = u64>,
) -> &S {
    slot.get_or_insert_with(|| {
        let subject = make();
        prime(&subject, path, keys);
        subject
    })
}

fn hot_key<S: Subject>(group: &mut Group<'_>, name: &str, make: impl Fn() -> S, path: Path) {
    let mut slot = None;
    group.bench_function(name, |b| {
        let subject = lazily(&mut slot, &make, path, std::iter::once(42));
        b.iter(|| black_box(subject.check(black_box(42))));
    });
}

fn random_many<S: Subject>(
    group: &mut Group<'_>,
    name: &str,
    make: impl Fn() -> S,
    path: Path,
    order: &[u64],
) {
    let mut slot = None;
    let mut i = 0;
    group.bench_function(name, |b| {
        let subject = lazily(&mut slot, &make, path, 0..MANY);
        b.iter(|| {
            i = (i + 1) & (order.len() - 1);
            black_box(subject.check(order[i]))
        });
    });
}

/// A new key on every call: fresh limiters filled with up to a million
/// new keys each, timing only the checks.
fn new_keys<S: Subject>(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    make: impl Fn() -> S,
) {
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(MANY);
                let subject = make();
                let start = Instant::now();
                for key in 0..chunk {
                    black_box(subject.check(key));
                }
                total += start.elapsed();
                left -= chunk;
                drop(subject);
            }
            total
        });
    });
}

/// Two threads checking the same 1,024 keys in different orders; the time
/// per iteration is the wall time for each thread to make one check.
fn two_threads<S: Subject>(
    group: &mut Group<'_>,
    name: &str,
    make: impl Fn() -> S,
    orders: &[Vec<u64>; 2],
) {
    let mut slot = None;
    group.bench_function(name, |b| {
        let subject = lazily(&mut slot, &make, Path::Allowed, 0..SHARED);
        b.iter_custom(|iters| {
            let barrier = Barrier::new(3);
            std::thread::scope(|s| {
                for order in orders {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        let mut i = 0;
                        for _ in 0..iters {
                            i = (i + 1) & (order.len() - 1);
                            black_box(subject.check(order[i]));
                        }
                    });
                }
                barrier.wait();
                // Leaving the scope joins both threads.
                Instant::now()
            })
            .elapsed()
        });
    });
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

fn hot(c: &mut Criterion) {
    for (label, path) in [("allowed", Path::Allowed), ("denied", Path::Denied)] {
        let mut group = c.benchmark_group(format!("memory/hot_key_{label}"));
        hot_key(&mut group, "governor", || governor(path), path);
        for algorithm in ALGORITHMS {
            hot_key(&mut group, algorithm, || ours(algorithm, path), path);
        }
        group.finish();
    }
    // The default clocks: governor's TSC-based quanta clock, and the
    // system clock (`Instant` offset from the wall clock at start).
    let mut group = c.benchmark_group("memory/hot_key_allowed_default_clocks");
    let gov = || governor::DefaultKeyedRateLimiter::<u64>::dashmap(quota(Path::Allowed));
    hot_key(&mut group, "governor", gov, Path::Allowed);
    let limiter =
        || MemoryLimiter::with_clock(policy("token_bucket", Path::Allowed), SystemClock::new());
    hot_key(&mut group, "token_bucket", limiter, Path::Allowed);
    group.finish();
}

fn many(c: &mut Criterion) {
    let order = random_keys(1 << 20, MANY);
    for (label, path) in [("allowed", Path::Allowed), ("denied", Path::Denied)] {
        let mut group = c.benchmark_group(format!("memory/random_1m_keys_{label}"));
        random_many(&mut group, "governor", || governor(path), path, &order);
        for algorithm in ALGORITHMS {
            random_many(
                &mut group,
                algorithm,
                || ours(algorithm, path),
                path,
                &order,
            );
        }
        group.finish();
    }
}

fn fresh(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory/new_key");
    new_keys(&mut group, "governor", || governor(Path::Allowed));
    for algorithm in ALGORITHMS {
        new_keys(&mut group, algorithm, || ours(algorithm, Path::Allowed));
    }
    group.finish();
}

fn threads(c: &mut Criterion) {
    let orders = [
        random_keys(1 << 16, SHARED),
        random_keys(1 << 17, SHARED)[1 << 16..].to_vec(),
    ];
    let mut group = c.benchmark_group("memory/two_threads_1024_keys_allowed");
    two_threads(&mut group, "governor", || governor(Path::Allowed), &orders);
    for algorithm in ALGORITHMS {
        two_threads(
            &mut group,
            algorithm,
            || ours(algorithm, Path::Allowed),
            &orders,
        );
    }
    group.finish();
}

/// In a private module: `criterion_group!` makes an undocumented `pub fn`.
mod group {
    use super::{config, fresh, hot, many, threads};
    use criterion::criterion_group;

    criterion_group! {
        name = benches;
        config = config();
        targets = hot, many, fresh, threads
    }
}
criterion_main!(group::benches);
