//! The operator's metrics count exactly what happened to the table: keys
//! refused by a full table, keys forgotten once idle, and the keys held when
//! last recorded. Read back through `metrics-util`'s `DebuggingRecorder`.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use ratelimit_core::{ManualClock, Policy};
use ratelimit_memory::{MemoryLimiter, MemoryLimiterOptions, WhenFull};

const RECLAIMED: &str = "ratelimit_memory_keys_reclaimed_total";
const REFUSED: &str = "ratelimit_memory_keys_refused_total";
const KEYS: &str = "ratelimit_memory_keys";

fn key(i: u64) -> [u8; 8] {
    i.to_le_bytes()
}

/// A recorder and what it recorded, read at checkpoints ([`take`]). The
/// debugging recorder zeroes counters and gauges as it snapshots them, so
/// counters are added up across snapshots, and a gauge reads the value it
/// was set to since the snapshot before (zero when it was not set).
///
/// [`take`]: Readings::take
struct Readings {
    recorder: DebuggingRecorder,
    snapshotter: Snapshotter,
    counters: HashMap<String, u64>,
    gauges: HashMap<String, f64>,
}

impl Readings {
    fn new() -> Self {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        Self {
            recorder,
            snapshotter,
            counters: HashMap::new(),
            gauges: HashMap::new(),
        }
    }

    /// A limiter whose handles are registered with this recorder.
    fn limiter(
        &self,
        policy: Policy,
        clock: ManualClock,
        options: MemoryLimiterOptions,
    ) -> MemoryLimiter<ManualClock> {
        metrics::with_local_recorder(&self.recorder, || {
            MemoryLimiter::with_options(policy, clock, options)
        })
    }

    /// Takes a snapshot: the checkpoint the readings are from.
    fn take(&mut self) {
        self.gauges.clear();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let (kind, key) = key.into_parts();
            let mut labels = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect::<Vec<_>>();
            labels.sort();
            let id = format!("{}{{{}}}", key.name(), labels.join(","));
            match value {
                DebugValue::Counter(n) => *self.counters.entry(id).or_default() += n,
                DebugValue::Gauge(v) => {
                    self.gauges.insert(id, v.into_inner());
                }
                DebugValue::Histogram(_) => panic!("unexpected histogram {id} ({kind:?})"),
            }
        }
    }

    /// The total of counter `name` over all its label sets, up to the last
    /// checkpoint.
    fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .filter(|(id, _)| id.starts_with(&format!("{name}{{")))
            .map(|(_, n)| n)
            .sum()
    }

    /// The value gauge `id` (name and sorted labels) was set to between
    /// the last two checkpoints: zero if it was not; `None` if it does not
    /// exist.
    fn gauge(&self, id: &str) -> Option<f64> {
        self.gauges.get(id).copied()
    }
}

/// One shard holding at most `max_keys`, so "full" means exactly that.
fn capped(max_keys: usize, when_full: WhenFull) -> MemoryLimiterOptions {
    MemoryLimiterOptions::default()
        .with_shards(NonZeroUsize::new(1).unwrap())
        .with_max_keys(NonZeroUsize::new(max_keys).unwrap())
        .with_when_full(when_full)
}

#[test]
fn each_new_key_a_full_table_turns_away_is_counted_once() {
    for when_full in [WhenFull::DenyNewKeys, WhenFull::AllowUnlimited] {
        let mut readings = Readings::new();
        let clock = ManualClock::new(0);
        let policy = Policy::fixed_window(2, Duration::from_secs(1)).unwrap();
        let limiter = readings.limiter(policy, clock.clone(), capped(100, when_full));

        for i in 0..100 {
            assert!(limiter.check_sync(&key(i), 1).unwrap().allowed);
        }
        readings.take();
        assert_eq!(readings.counter(REFUSED), 0, "{when_full:?}: room for all");

        let refused = 7;
        for i in 100..100 + refused {
            let d = limiter.check_sync(&key(i), 1).unwrap();
            assert_eq!(d.allowed, when_full == WhenFull::AllowUnlimited);
        }
        // Stored keys, allowed or denied, are no refusals.
        for _ in 0..3 {
            limiter.check_sync(&key(0), 1).unwrap();
        }
        readings.take();
        assert_eq!(readings.counter(REFUSED), refused, "{when_full:?}");
        assert_eq!(readings.counter(RECLAIMED), 0, "{when_full:?}: all live");
        assert_eq!(limiter.len(), 100);
    }
}

#[test]
fn a_full_table_reclaims_its_idle_keys_and_counts_them() {
    let mut readings = Readings::new();
    let clock = ManualClock::new(0);
    let policy = Policy::token_bucket(5, 1, Duration::from_secs(1)).unwrap();
    let limiter = readings.limiter(policy, clock.clone(), capped(100, WhenFull::DenyNewKeys));

    for i in 0..100 {
        limiter.check_sync(&key(i), 1).unwrap();
    }
    // One token refills in a second: every bucket is full again, idle.
    clock.advance(Duration::from_secs(1));
    assert!(limiter.check_sync(&key(1_000), 1).unwrap().allowed);
    readings.take();
    assert_eq!(readings.counter(RECLAIMED), 100);
    assert_eq!(readings.counter(REFUSED), 0);
    assert_eq!(limiter.len(), 1);
}

#[test]
fn the_incremental_sweeper_counts_every_key_it_forgets() {
    let mut readings = Readings::new();
    let clock = ManualClock::new(0);
    let policy = Policy::fixed_window(3, Duration::from_secs(1)).unwrap();
    let options = MemoryLimiterOptions::default().with_shards(NonZeroUsize::new(1).unwrap());
    let limiter = readings.limiter(policy, clock.clone(), options);

    let n = 1_000;
    for i in 0..n {
        limiter.check_sync(&key(i), 1).unwrap();
    }
    clock.advance(Duration::from_secs(1));
    readings.take();
    assert_eq!(readings.counter(RECLAIMED), 0, "nothing swept yet");

    // Traffic on one key alone walks the sweeper over the whole table.
    for _ in 0..10_000 {
        limiter.check_sync(b"busy", 1).unwrap();
    }
    assert_eq!(limiter.len(), 1, "only the busy key is left");
    readings.take();
    assert_eq!(readings.counter(RECLAIMED), n);
    assert_eq!(limiter.purge_idle(), 0);
    readings.take();
    assert_eq!(readings.counter(RECLAIMED), n, "nothing counted twice");
}

#[test]
fn purge_idle_counts_what_it_forgets_and_records_the_keys_left() {
    let mut readings = Readings::new();
    let clock = ManualClock::new(0);
    let policy = Policy::sliding_window(3, Duration::from_secs(1)).unwrap();
    let limiter = readings.limiter(policy, clock.clone(), MemoryLimiterOptions::default());
    let gauge = "ratelimit_memory_keys{limiter=default,policy=sliding_window}";

    for i in 0..50 {
        limiter.check_sync(&key(i), 1).unwrap();
    }
    // A sliding window remembers the previous window: idle after two.
    clock.advance(Duration::from_secs(2));
    for i in 50..60 {
        limiter.check_sync(&key(i), 1).unwrap();
    }
    readings.take();
    let swept_already = readings.counter(RECLAIMED);
    let purged = limiter.purge_idle();
    assert_eq!(swept_already + purged as u64, 50);
    readings.take();
    assert_eq!(readings.counter(RECLAIMED), 50);
    assert_eq!(readings.gauge(gauge), Some(10.0));
}

#[test]
fn the_keys_gauge_moves_only_when_recorded() {
    let mut readings = Readings::new();
    let clock = ManualClock::new(0);
    let policy = Policy::fixed_window(3, Duration::from_secs(1)).unwrap();
    let limiter = readings.limiter(policy, clock, MemoryLimiterOptions::default());
    let gauge = "ratelimit_memory_keys{limiter=default,policy=fixed_window}";

    readings.take();
    assert_eq!(readings.gauge(gauge), Some(0.0), "registered at build");
    for i in 0..20 {
        limiter.check_sync(&key(i), 1).unwrap();
    }
    readings.take();
    assert_eq!(readings.gauge(gauge), Some(0.0), "checks never set it");
    assert_eq!(limiter.record_len(), 20);
    readings.take();
    assert_eq!(readings.gauge(gauge), Some(20.0));
}

#[test]
fn limiters_named_apart_keep_their_metrics_apart() {
    let mut readings = Readings::new();
    let clock = ManualClock::new(0);
    let policy = Policy::fixed_window(1, Duration::from_secs(1)).unwrap();
    let login = readings.limiter(
        policy,
        clock.clone(),
        capped(1, WhenFull::DenyNewKeys).with_name("login"),
    );
    let api = readings.limiter(
        policy,
        clock,
        MemoryLimiterOptions::default().with_name("api"),
    );

    login.check_sync(b"a", 1).unwrap();
    assert!(!login.check_sync(b"b", 1).unwrap().allowed);
    for i in 0..5 {
        api.check_sync(&key(i), 1).unwrap();
    }
    login.record_len();
    api.record_len();

    readings.take();
    assert_eq!(
        readings.counters[&format!("{REFUSED}{{limiter=login,policy=fixed_window}}")],
        1
    );
    assert_eq!(
        readings.counters[&format!("{REFUSED}{{limiter=api,policy=fixed_window}}")],
        0
    );
    assert_eq!(
        readings.gauge(&format!("{KEYS}{{limiter=login,policy=fixed_window}}")),
        Some(1.0)
    );
    assert_eq!(
        readings.gauge(&format!("{KEYS}{{limiter=api,policy=fixed_window}}")),
        Some(5.0)
    );
}
