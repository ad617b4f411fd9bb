//! `ratelimit-memory` against `governor` 0.10, measured as a dependent crate
//! gets them: this crate is outside the workspace, depends on both crates
//! like any user, uses only their public API, and is built with the release
//! profile and fat LTO.
//!
//! Run with: `scripts/bench-memory [ROUNDS]` (or `cargo run --release` here;
//! `BENCH_MS` sets the time per measurement, 300 by default;
//! `BENCH_ONLY=random,thread` runs only the scenarios whose names contain
//! one of the words, `bytes` naming the bytes per key).
//!
//! Every round measures every scenario for every subject (governor, then
//! this workspace's token bucket, fixed window and sliding window, the
//! order rotated each round), so a change in the machine's load hits all
//! subjects of a round alike. A ratio is taken within a round, and the
//! report gives its median and its range over the rounds. Bytes per key are
//! exact (a counting global allocator) and measured once.
//!
//! No allowed check is ever denied: the hot-key and two-thread scenarios,
//! which check one key millions of times, limit at `2^32 - 1`; the others
//! at `65,535`, a 16-bit limit as most applications set (governor gets a
//! burst of as many, which changes nothing in its cost). Below `2^16` the
//! memory backend stores a sliding window in 8 bytes, above it in 12.

// A report binary: printing is its purpose.
#![allow(clippy::print_stdout)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use governor::clock::FakeRelativeClock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use ratelimit_core::{ManualClock, Policy, SystemClock};
use ratelimit_memory::MemoryLimiter;

/// Counts the heap bytes live at any time.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counter is a
// side effect that allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is `System`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as `dealloc` and `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A realistic epoch time for the manual clock, in µs.
const START: u64 = 1_700_000_000_000_000;
/// Keys in the "many keys" scenarios.
const MANY: u64 = 1_000_000;
/// Keys shared by the two threads.
const SHARED: u64 = 1_024;

/// The subjects, in the order of the report.
const SUBJECTS: [&str; 4] = ["governor", "token_bucket", "fixed_window", "sliding_window"];

/// One limiter under test: a check of cost one.
trait Subject: Sync {
    fn check(&self, key: u64) -> bool;
    // governor's key type is `String`, and `check_key` takes `&K`.
    #[allow(clippy::ptr_arg)]
    fn check_str(&self, key: &String) -> bool;
}

type Governor<C> = RateLimiter<
    u64,
    DashMapStateStore<u64>,
    C,
    NoOpMiddleware<<C as governor::clock::Clock>::Instant>,
>;
type GovernorStr = RateLimiter<
    String,
    DashMapStateStore<String>,
    FakeRelativeClock,
    NoOpMiddleware<<FakeRelativeClock as governor::clock::Clock>::Instant>,
>;

impl<C: governor::clock::Clock + Sync> Subject for Governor<C>
where
    C::Instant: Sync,
{
    #[inline]
    fn check(&self, key: u64) -> bool {
        self.check_key(&key).is_ok()
    }
    fn check_str(&self, _: &String) -> bool {
        unreachable!("u64 keys only")
    }
}

impl Subject for GovernorStr {
    fn check(&self, _: u64) -> bool {
        unreachable!("string keys only")
    }
    #[inline]
    fn check_str(&self, key: &String) -> bool {
        self.check_key(key).is_ok()
    }
}

impl<C: ratelimit_core::Clock> Subject for MemoryLimiter<C> {
    #[inline]
    fn check(&self, key: u64) -> bool {
        self.check_sync(&key.to_le_bytes(), 1)
            .expect("a cost of one is valid")
            .allowed
    }
    #[inline]
    fn check_str(&self, key: &String) -> bool {
        self.check_sync(key.as_bytes(), 1)
            .expect("a cost of one is valid")
            .allowed
    }
}

/// Whether the checks are allowed or denied.
#[derive(Clone, Copy)]
enum Path {
    /// A limit no run can exhaust: `2^32 - 1` (governor: a burst of as
    /// many), for the scenarios that check one key millions of times.
    Allowed,
    /// A limit no run of the many-key scenarios reaches, in 16 bits as the
    /// limits of most applications are: `65,535` (governor: a burst of as
    /// many). The memory backend stores a sliding window of such a limit in
    /// 8 bytes instead of 12.
    Many,
    /// One unit per hour, taken before measuring.
    Denied,
}

fn quota(path: Path) -> Quota {
    match path {
        Path::Allowed => {
            Quota::per_second(NonZeroU32::new(1_000).unwrap()).allow_burst(NonZeroU32::MAX)
        }
        Path::Many => Quota::per_second(NonZeroU32::new(1_000).unwrap())
            .allow_burst(NonZeroU32::new(u32::from(u16::MAX)).unwrap()),
        Path::Denied => Quota::per_hour(NonZeroU32::MIN),
    }
}

/// The policy of `algorithm` equivalent to `quota(path)`.
fn policy(algorithm: &str, path: Path) -> Policy {
    let (limit, period) = match path {
        Path::Allowed => (u64::from(u32::MAX), Duration::from_secs(1)),
        Path::Many => (u64::from(u16::MAX), Duration::from_secs(1)),
        Path::Denied => (1, Duration::from_secs(3600)),
    };
    match (algorithm, path) {
        ("token_bucket", Path::Allowed | Path::Many) => Policy::token_bucket(limit, 1_000, period),
        ("token_bucket", Path::Denied) => Policy::token_bucket(1, 1, period),
        ("fixed_window", _) => Policy::fixed_window(limit, period),
        ("sliding_window", _) => Policy::sliding_window(limit, period),
        _ => unreachable!("unknown algorithm {algorithm}"),
    }
    .expect("bench policies are in the exact domain")
}

fn governor_fake(path: Path) -> Governor<FakeRelativeClock> {
    RateLimiter::dashmap_with_clock(quota(path), FakeRelativeClock::default())
}

fn ours(algorithm: &str, path: Path) -> MemoryLimiter<ManualClock> {
    MemoryLimiter::with_clock(policy(algorithm, path), ManualClock::new(START))
}

/// `n` keys in `0..range`, uniformly random (splitmix64, fixed seed).
fn random_keys(n: usize, range: u64, seed: u64) -> Vec<u64> {
    let mut x = seed;
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

/// The 20-byte string key number `i`.
fn string_key(i: u64) -> String {
    format!("user-{i:015}")
}

/// Calls `batch` (which makes `per_batch` checks) until `budget` has
/// passed; returns ns per check.
fn timed(budget: Duration, per_batch: u64, mut batch: impl FnMut()) -> f64 {
    // One untimed batch: the first touch of anything lazily set up.
    batch();
    let start = Instant::now();
    let mut checks = 0;
    while start.elapsed() < budget {
        batch();
        checks += per_batch;
    }
    start.elapsed().as_nanos() as f64 / checks as f64
}

fn hot_key<S: Subject>(subject: &S, path: Path, budget: Duration) -> f64 {
    assert!(subject.check(42), "a fresh key admits one unit");
    if let Path::Denied = path {
        assert!(!subject.check(42), "the denied path denies");
    }
    timed(budget, 10_000, || {
        for _ in 0..10_000 {
            black_box(subject.check(black_box(42)));
        }
    })
}

/// Checks in the random `order` on a subject already holding every key.
fn random_many<S: Subject>(subject: &S, order: &[u64], budget: Duration) -> f64 {
    let mut i = 0;
    timed(budget, 10_000, || {
        for _ in 0..10_000 {
            i = (i + 1) & (order.len() - 1);
            black_box(subject.check(order[i]));
        }
    })
}

/// A fresh subject, then a new key on every call; times only the checks.
fn new_keys<S: Subject>(subject: S, keys: u64) -> f64 {
    let start = Instant::now();
    for key in 0..keys {
        black_box(subject.check(key));
    }
    let ns = start.elapsed().as_nanos() as f64 / keys as f64;
    drop(subject);
    ns
}

fn new_string_keys<S: Subject>(subject: S, keys: &[String]) -> f64 {
    let start = Instant::now();
    for key in keys {
        black_box(subject.check_str(key));
    }
    let ns = start.elapsed().as_nanos() as f64 / keys.len() as f64;
    drop(subject);
    ns
}

/// Two threads checking the same keys in different orders; the wall time
/// for each thread to make one check.
fn two_threads<S: Subject>(subject: &S, orders: &[Vec<u64>; 2], budget: Duration) -> f64 {
    for key in 0..SHARED {
        subject.check(key);
    }
    let per_thread = 1_000_000;
    let run = |checks: u64| {
        let barrier = Barrier::new(3);
        std::thread::scope(|s| {
            for order in orders {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let mut i = 0;
                    for _ in 0..checks {
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
    };
    run(per_thread / 10);
    let mut total = Duration::ZERO;
    let mut checks = 0;
    while total < budget {
        total += run(per_thread);
        checks += per_thread;
    }
    total.as_nanos() as f64 / checks as f64
}

/// Heap bytes per key after `fill` fills a fresh subject with `keys` keys.
fn bytes_per_key<S>(make: impl FnOnce() -> S, fill: impl FnOnce(&S), keys: u64) -> f64 {
    let before = LIVE.load(Ordering::Relaxed);
    let subject = make();
    fill(&subject);
    let after = LIVE.load(Ordering::Relaxed);
    drop(black_box(subject));
    (after - before) as f64 / keys as f64
}

/// Subjects kept across rounds: the one-million-key tables.
struct Filled {
    governor: Governor<FakeRelativeClock>,
    ours: [MemoryLimiter<ManualClock>; 3],
}

/// One scenario of the report.
struct Scenario {
    name: &'static str,
    /// ns per check by round, per subject (indices of [`SUBJECTS`]).
    ns: [Vec<f64>; 4],
}

const SCENARIOS: [&str; 7] = [
    "hot key, allowed",
    "hot key, denied",
    "hot key, allowed, default clocks (SystemClock vs quanta)",
    "new key every call, up to 1M",
    "2 threads, same 1,024 keys",
    "1M random keys",
    "20-byte string keys, new key every call",
];

struct Inputs {
    budget: Duration,
    filled: Filled,
    order: Vec<u64>,
    orders: [Vec<u64>; 2],
    strings: Vec<String>,
}

/// ns per check of subject `who` in scenario `what`.
fn measure(what: usize, who: usize, inputs: &Inputs) -> f64 {
    let budget = inputs.budget;
    let algorithm = SUBJECTS[who];
    match (what, who) {
        (0 | 1, 0) => {
            let path = if what == 0 {
                Path::Allowed
            } else {
                Path::Denied
            };
            hot_key(&governor_fake(path), path, budget)
        }
        (0 | 1, _) => {
            let path = if what == 0 {
                Path::Allowed
            } else {
                Path::Denied
            };
            hot_key(&ours(algorithm, path), path, budget)
        }
        (2, 0) => hot_key(
            &governor::DefaultKeyedRateLimiter::<u64>::dashmap(quota(Path::Allowed)),
            Path::Allowed,
            budget,
        ),
        (2, _) => hot_key(
            &MemoryLimiter::with_clock(policy(algorithm, Path::Allowed), SystemClock::new()),
            Path::Allowed,
            budget,
        ),
        (3, 0) => new_keys(governor_fake(Path::Many), MANY),
        (3, _) => new_keys(ours(algorithm, Path::Many), MANY),
        (4, 0) => two_threads(&governor_fake(Path::Allowed), &inputs.orders, budget),
        (4, _) => two_threads(&ours(algorithm, Path::Allowed), &inputs.orders, budget),
        (5, 0) => random_many(&inputs.filled.governor, &inputs.order, budget),
        (5, _) => random_many(&inputs.filled.ours[who - 1], &inputs.order, budget),
        (6, 0) => {
            let governor: GovernorStr =
                RateLimiter::dashmap_with_clock(quota(Path::Many), FakeRelativeClock::default());
            new_string_keys(governor, &inputs.strings)
        }
        (6, _) => new_string_keys(ours(algorithm, Path::Many), &inputs.strings),
        _ => unreachable!("{} scenarios", SCENARIOS.len()),
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// `median (min..max)` of the per-round ratios `a[i] / b[i]`.
fn ratio(a: &[f64], b: &[f64]) -> String {
    let ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
    let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ratios.iter().copied().fold(0.0, f64::max);
    format!("{:.2} ({min:.2}..{max:.2})", median(&ratios))
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(7, |r| r.parse().expect("ROUNDS is a whole number"));
    let ms: u64 = std::env::var("BENCH_MS")
        .ok()
        .map_or(300, |m| m.parse().expect("BENCH_MS is a whole number"));
    let only: Option<Vec<String>> = std::env::var("BENCH_ONLY")
        .ok()
        .map(|words| words.split(',').map(str::to_owned).collect());
    let wanted = |name: &str| {
        only.as_ref()
            .is_none_or(|words| words.iter().any(|w| name.contains(w.as_str())))
    };
    let started = Instant::now();

    // Bytes per key first, in a quiet heap.
    let strings: Vec<String> = (0..MANY).map(string_key).collect();
    assert!(strings.iter().all(|s| s.len() == 20));
    let mut bytes = Vec::new();
    for (who, name) in SUBJECTS.iter().enumerate().filter(|_| wanted("bytes")) {
        let u64_keys = if who == 0 {
            bytes_per_key(
                || governor_fake(Path::Many),
                |g| (0..MANY).for_each(|k| assert!(g.check(k))),
                MANY,
            )
        } else {
            bytes_per_key(
                || ours(name, Path::Many),
                |l| (0..MANY).for_each(|k| assert!(l.check(k))),
                MANY,
            )
        };
        let string_keys = if who == 0 {
            bytes_per_key(
                || -> GovernorStr {
                    RateLimiter::dashmap_with_clock(quota(Path::Many), FakeRelativeClock::default())
                },
                |g| strings.iter().for_each(|k| assert!(g.check_str(k))),
                MANY,
            )
        } else {
            bytes_per_key(
                || ours(name, Path::Many),
                |l| strings.iter().for_each(|k| assert!(l.check_str(k))),
                MANY,
            )
        };
        bytes.push((u64_keys, string_keys));
    }

    let filled = Filled {
        governor: governor_fake(Path::Many),
        ours: [
            ours("token_bucket", Path::Many),
            ours("fixed_window", Path::Many),
            ours("sliding_window", Path::Many),
        ],
    };
    for key in (0..MANY).filter(|_| wanted(SCENARIOS[5])) {
        filled.governor.check(key);
        for limiter in &filled.ours {
            limiter.check(key);
        }
    }
    let inputs = Inputs {
        budget: Duration::from_millis(ms),
        filled,
        order: random_keys(1 << 20, MANY, 1),
        orders: [
            random_keys(1 << 16, SHARED, 2),
            random_keys(1 << 16, SHARED, 3),
        ],
        strings,
    };

    let mut scenarios: Vec<Scenario> = SCENARIOS
        .iter()
        .map(|name| Scenario {
            name,
            ns: Default::default(),
        })
        .collect();
    for round in 0..rounds {
        for (what, scenario) in scenarios.iter_mut().enumerate() {
            if !wanted(scenario.name) {
                continue;
            }
            for turn in 0..SUBJECTS.len() {
                // Rotate who goes first, so no subject always follows the
                // same one.
                let who = (turn + round) % SUBJECTS.len();
                scenario.ns[who].push(measure(what, who, &inputs));
            }
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }

    println!(
        "{rounds} interleaved rounds, {ms} ms per measurement, {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
    println!();
    println!(
        "| scenario | governor ns | token bucket ns | ratio (min..max) | fixed ns | ratio | sliding ns | ratio | fixed / bucket | sliding / bucket |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in scenarios.iter().filter(|s| wanted(s.name)) {
        let [g, t, f, w] = &s.ns;
        println!(
            "| {} | {:.1} | {:.1} | {} | {:.1} | {} | {:.1} | {} | {} | {} |",
            s.name,
            median(g),
            median(t),
            ratio(t, g),
            median(f),
            ratio(f, g),
            median(w),
            ratio(w, g),
            ratio(f, t),
            ratio(w, t),
        );
    }
    if bytes.is_empty() {
        return;
    }
    println!();
    println!("| heap bytes per key at 1M | governor | token bucket | ratio | fixed | ratio | sliding | ratio |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (label, pick) in [
        ("u64", (|b: &(f64, f64)| b.0) as fn(&(f64, f64)) -> f64),
        ("20-byte strings", |b| b.1),
    ] {
        let g = pick(&bytes[0]);
        let cells: Vec<String> = bytes[1..]
            .iter()
            .map(|b| format!("{:.1} | {:.2}", pick(b), pick(b) / g))
            .collect();
        println!("| {label} | {g:.1} | {} |", cells.join(" | "));
    }
}
