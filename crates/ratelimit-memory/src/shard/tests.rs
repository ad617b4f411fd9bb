//! The shard against a model: a map of the core's pure policy states that
//! never forgets anything. Random operations (checks, the clock moving,
//! sweeping, purging, resets) run against both; decisions must be identical,
//! and the sweeper's bookkeeping must keep its promises:
//!
//! - a key whose state is not idle is never forgotten: it is still in the
//!   table, and its decision is the model's;
//! - a forgotten idle key decides as the model's stored state does;
//! - a shard never holds more than its cap, and refuses a new key exactly
//!   when its live keys fill it;
//! - after the sweep steps `Shard::sweep_step` documents at `t`, no key
//!   idle at `t` is left, and `earliest_forget` stays a lower bound of what
//!   is held;
//! - the reclaimed and refused counters agree with what happened.
//!
//! The clock also leaps forward by about `2^31` and `2^32` windows and to
//! the end of its range, where the stored window offsets (`packed.rs`) move
//! their base. A second model follows a clock set back further than the
//! base: the shard may then be stricter than the core, never looser.

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use proptest::prelude::*;
use ratelimit_core::{FixedWindow, SlidingWindow, TokenBucket};

use super::{Rules, Shard, SWEEP_STEP};
use crate::fingerprint::Fingerprint;
use crate::meters::{Meters, KEYS_RECLAIMED, KEYS_REFUSED};
use crate::packed::{NarrowSliding, Packing, BASE_LAG, OFFSETS};
use crate::WhenFull;

/// Keys the operations pick from: enough for a table of 128 slots, the
/// smallest one that shrinks.
const KEYS: usize = 96;
/// Where the clock starts: far from zero, as a real clock is.
const START: u64 = 1_700_000_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    /// Check key `key` with `cost` (zero and costs above the limit too).
    Check { key: usize, cost: u64 },
    /// Check `count` keys in a row from `key` (wrapping), at cost 1: fills
    /// the table fast, so that it grows, and later shrinks.
    Flood { key: usize, count: usize },
    /// Move the clock forward.
    Advance(u64),
    /// Move the clock forward by this many windows (ms for a token bucket)
    /// and `by` µs, or to [`END`] `- by` when `windows` is zero:
    /// where the stored window offsets move their base.
    Leap { windows: u64, by: u64 },
    /// Move the clock forward to a key's forget instant plus `offset` µs:
    /// where reclaiming a microsecond early or late shows.
    ToForget { key: usize, offset: i64 },
    /// Move the clock back, never more than the grace behind the latest
    /// time seen (the promise of `MemoryLimiterOptions::with_idle_grace`), and
    /// only in uncapped shards: see [`Run::rewinds`].
    Rewind(u64),
    /// One sweep step, as a check may take: leaves the sweeper mid-pass,
    /// where entries moving behind its cursor can be missed.
    Step,
    /// As many sweep steps as the documented bound, at the same instant.
    Sweep,
    /// Forget every idle key.
    Purge,
    /// Forget a key.
    Reset { key: usize },
    /// Forget the key held `back` slots behind the sweeper's cursor, if
    /// any: the entries after it shift back, one of them past the cursor.
    ResetBehindCursor { back: usize },
}

#[derive(Debug, Clone)]
struct Setup {
    /// The low half (the home slot) of each key's fingerprint: often from
    /// a narrow range, to crowd keys together and push them past the end
    /// of the table to its start.
    homes: Vec<u64>,
    cap: Option<usize>,
    when_full: WhenFull,
    grace_us: u64,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        // Keys crowded in one run of slots at the start; crowded at the
        // start and at the end (the low bits of a value near `u64::MAX`
        // are the last slots of any table), so that runs wrap; or anywhere.
        prop_oneof![
            prop::collection::vec(0u64..6, KEYS),
            prop::collection::vec(prop_oneof![0u64..4, (u64::MAX - 3)..=u64::MAX], KEYS),
            prop::collection::vec(any::<u64>(), KEYS),
        ],
        prop::option::of(1usize..=12),
        prop_oneof![Just(WhenFull::DenyNewKeys), Just(WhenFull::AllowUnlimited)],
        prop_oneof![Just(0u64), 1u64..5_000],
    )
        .prop_map(|(homes, cap, when_full, grace_us)| Setup {
            homes,
            cap,
            when_full,
            grace_us,
        })
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    // Limits are 1 to 4: 5 is always too much, 0 always invalid.
    let cost = prop_oneof![8 => 1u64..=4, 1 => Just(0u64), 1 => Just(5u64)];
    let op = prop_oneof![
        8 => (0..KEYS, cost).prop_map(|(key, cost)| Op::Check { key, cost }),
        1 => (0..KEYS, 1..=KEYS).prop_map(|(key, count)| Op::Flood { key, count }),
        2 => prop_oneof![0u64..2_000, 0u64..20_000].prop_map(Op::Advance),
        1 => (leap_windows(), 0u64..3_000).prop_map(|(windows, by)| Op::Leap { windows, by }),
        2 => (0..KEYS, -1i64..=1).prop_map(|(key, offset)| Op::ToForget { key, offset }),
        1 => (0u64..5_000).prop_map(Op::Rewind),
        2 => Just(Op::Step),
        1 => Just(Op::Sweep),
        1 => Just(Op::Purge),
        1 => (0..KEYS).prop_map(|key| Op::Reset { key }),
        1 => (1usize..=3).prop_map(|back| Op::ResetBehindCursor { back }),
    ];
    prop::collection::vec(op, 1..150)
}

/// Windows a leap spans: around the lag the base keeps and the offsets'
/// range, anywhere beyond, or zero for a leap to the end of the clock.
fn leap_windows() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        (BASE_LAG - 2)..=(BASE_LAG + 2),
        (OFFSETS - 2)..=(OFFSETS + 2),
        1u64..(1 << 40),
    ]
}

/// The latest time the operations set: a leap to "the end" of the clock
/// stops short of it by more than anything else the operations add, and
/// by less than `2^31` windows (so the base's range reaches past
/// `u64::MAX`). At `u64::MAX` itself the core's expiries saturate and
/// every state reads as idle.
const END: u64 = u64::MAX - (1 << 40);

/// Microseconds per window of `algorithm`, or `period` without windows.
fn unit<A: Packing>(algorithm: &A, period: u64) -> u64 {
    algorithm.window_us().unwrap_or(period)
}

/// One shard, its model, and what both should have counted.
struct Run<A: Packing> {
    rules: Rules<A>,
    shard: Shard<A>,
    fps: Vec<Fingerprint>,
    /// The model: every key's state as the pure policy left it.
    model: HashMap<usize, A::State>,
    now: u64,
    /// The latest time seen: what "not idle" is judged at, since a key
    /// forgotten then stays forgotten when the clock goes back.
    latest: u64,
    /// Whether the clock may go back. Not with a cap: whether a new key is
    /// refused depends on the live keys the shard holds, and after a rewind
    /// that set is no longer a function of the model alone.
    rewinds: bool,
    snapshotter: Snapshotter,
    /// The reclaimed and refused counters, as recorded.
    reclaimed: u64,
    refused: u64,
    /// Keys the shard took in, and those a reset removed: the rest of what
    /// it no longer holds it must have reclaimed.
    inserted: u64,
    reset_removed: u64,
    /// Refusals the model foresaw.
    refusals: u64,
}

impl<A: Packing> Run<A> {
    fn new(algorithm: A, setup: Setup) -> Self {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let meters = metrics::with_local_recorder(&recorder, || Meters::register("test", "model"));
        let fps = setup
            .homes
            .iter()
            .zip(1u32..)
            .map(|(&lo, hi)| Fingerprint::from_parts(lo, hi))
            .collect();
        Self {
            rules: Rules {
                algorithm,
                cap: setup.cap.unwrap_or(usize::MAX),
                when_full: setup.when_full,
                grace_us: setup.grace_us,
                meters,
            },
            shard: Shard::default(),
            fps,
            model: HashMap::new(),
            now: START,
            latest: START,
            rewinds: setup.cap.is_none(),
            snapshotter,
            reclaimed: 0,
            refused: 0,
            inserted: 0,
            reset_removed: 0,
            refusals: 0,
        }
    }

    fn forget_at(&self, key: usize) -> Option<u64> {
        self.model.get(&key).map(|s| self.rules.forget_at(*s))
    }

    fn held(&self, key: usize) -> bool {
        self.shard.slots.find(self.fps[key]).is_some()
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Check { key, cost } => self.check(key, cost)?,
            Op::Flood { key, count } => {
                for k in (key..key + count).map(|k| k % KEYS) {
                    self.check(k, 1)?;
                }
            }
            Op::Advance(by) => self.now = self.now.saturating_add(by).min(END),
            Op::Leap { windows: 0, by } => self.now = self.now.max(END - by),
            Op::Leap { windows, by } => {
                let unit = unit(&self.rules.algorithm, 1000);
                self.now = self
                    .now
                    .saturating_add(windows.saturating_mul(unit))
                    .saturating_add(by)
                    .min(END);
            }
            Op::ToForget { key, offset } => {
                if let Some(at) = self.forget_at(key) {
                    self.now = self.now.max(at.saturating_add_signed(offset)).min(END);
                }
            }
            Op::Rewind(by) => {
                if self.rewinds {
                    let floor = self.latest.saturating_sub(self.rules.grace_us);
                    self.now = self.now.saturating_sub(by).max(floor);
                }
            }
            Op::Step => self.shard.sweep_step(&self.rules, self.now),
            Op::Sweep => self.sweep()?,
            Op::Purge => {
                let before = self.shard.len();
                let forgotten = self.shard.purge(&self.rules, self.now);
                prop_assert_eq!(forgotten, before - self.shard.len());
                self.no_idle_key_left("a purge")?;
            }
            Op::Reset { key } => self.reset(key),
            Op::ResetBehindCursor { back } => {
                let slot = self.shard.cursor.checked_sub(back);
                let key = (0..KEYS)
                    .find(|&k| slot.is_some() && self.shard.slots.find(self.fps[k]) == slot);
                if let Some(key) = key {
                    self.reset(key);
                }
            }
        }
        self.latest = self.latest.max(self.now);
        self.invariants()
    }

    fn reset(&mut self, key: usize) {
        if self.held(key) {
            self.reset_removed += 1;
        }
        self.shard.reset(self.fps[key]);
        self.model.remove(&key);
    }

    fn check(&mut self, key: usize, cost: u64) -> Result<(), TestCaseError> {
        let (now, fp) = (self.now, self.fps[key]);
        let state = self.model.get(&key).copied().unwrap_or_default();
        // A check first moves the base if `now` needs it, which may forget
        // this key too: done here, so that `was_held` is what it then finds.
        if now > self.shard.fits_until {
            self.shard.rebase(&self.rules, now);
        }
        let was_held = self.held(key);
        let expected = self.rules.algorithm.check(&state, now, cost);
        let got = self.shard.check(&self.rules, fp, now, cost);
        let (d, next) = match (expected, got) {
            (Err(e), Err(g)) => {
                prop_assert_eq!(e.kind(), g.kind());
                return Ok(());
            }
            (Ok((d, next)), Ok(g)) => {
                if d.allowed && self.refuses(key) {
                    return self.refused_new_key(key, d, g);
                }
                prop_assert_eq!(g, d, "key {} at {}: {:?}", key, now, state);
                (d, next)
            }
            (expected, got) => {
                return Err(TestCaseError::fail(format!(
                    "key {key} cost {cost}: model {expected:?}, shard {got:?}"
                )))
            }
        };
        if d.allowed {
            self.model.insert(key, next);
            prop_assert!(self.held(key), "an allowed key is stored");
        }
        self.inserted += u64::from(!was_held && self.held(key));
        Ok(())
    }

    /// Whether the model says a new check of `key` finds no room: the key
    /// is not live (the shard may have forgotten it), and the live keys,
    /// which the shard must all hold, fill the cap.
    fn refuses(&self, key: usize) -> bool {
        let live = |k: usize| self.forget_at(k).is_some_and(|at| self.now < at);
        if self.rules.cap == usize::MAX || live(key) {
            return false;
        }
        self.stored().filter(|&(_, at)| self.now < at).count() >= self.rules.cap
    }

    fn refused_new_key(
        &mut self,
        key: usize,
        fresh: ratelimit_core::Decision,
        got: ratelimit_core::Decision,
    ) -> Result<(), TestCaseError> {
        self.refusals += 1;
        prop_assert!(!self.held(key), "a refused key is not stored");
        match self.rules.when_full {
            WhenFull::AllowUnlimited => prop_assert_eq!(got, fresh),
            WhenFull::DenyNewKeys => {
                prop_assert!(!got.allowed);
                prop_assert_eq!(got.remaining, 0);
                prop_assert_eq!(got.limit, fresh.limit);
                // The wait is until the first held key may be forgotten,
                // or sooner (the shard keeps a lower bound), never zero.
                let first = self
                    .stored()
                    .filter(|&(k, _)| self.held(k))
                    .map(|(_, at)| at)
                    .min()
                    .expect("a full shard holds a key");
                let wait = got.retry_after.expect("a denial says when to retry");
                prop_assert!(wait >= Duration::from_micros(1));
                prop_assert!(wait <= Duration::from_micros(first.saturating_sub(self.now)));
                prop_assert_eq!(got.reset_after, wait);
            }
        }
        Ok(())
    }

    /// Steps the sweeper at one instant for as many turns as
    /// `Shard::sweep_step` documents: the rest of the pass, a whole pass
    /// and one turn per key, plus the slots of each table a shrink leaves.
    fn sweep(&mut self) -> Result<(), TestCaseError> {
        let shard = &mut self.shard;
        let mut slots = shard.slots.slot_count();
        let mut turns = (slots - shard.cursor.min(slots)) + slots + shard.len();
        let mut taken = 0;
        while taken < turns {
            shard.sweep_step(&self.rules, self.now);
            taken += SWEEP_STEP;
            if shard.slots.slot_count() != slots {
                slots = shard.slots.slot_count();
                turns += slots;
            }
        }
        self.no_idle_key_left(&format!("{taken} sweep turns"))
    }

    fn no_idle_key_left(&self, after: &str) -> Result<(), TestCaseError> {
        for (key, at) in self.stored() {
            prop_assert!(
                at > self.now || !self.held(key),
                "key {} idle since {} still held at {} after {}",
                key,
                at,
                self.now,
                after
            );
        }
        Ok(())
    }

    /// Every key the model has a state for, with its forget instant.
    fn stored(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.model
            .iter()
            .map(|(&key, state)| (key, self.rules.forget_at(*state)))
    }

    fn invariants(&mut self) -> Result<(), TestCaseError> {
        prop_assert!(self.shard.len() <= self.rules.cap, "over the cap");
        let mut held = 0;
        let mut least = u64::MAX;
        for (key, forget_at) in self.stored() {
            let Some(at) = self.shard.slots.find(self.fps[key]) else {
                prop_assert!(
                    forget_at <= self.latest,
                    "key {} forgotten before {} (latest time {})",
                    key,
                    forget_at,
                    self.latest
                );
                continue;
            };
            held += 1;
            least = least.min(forget_at);
            // What makes the end of a pass sound: while the pass counts as
            // exact, every entry behind the cursor was seen by it (or
            // inserted during it), so `pass_earliest` bounds it. An entry
            // moved behind the cursor unseen breaks this at once, whether
            // or not its expiry is the shard's earliest.
            if self.shard.pass_exact && at < self.shard.cursor {
                prop_assert!(
                    self.shard.pass_earliest <= forget_at,
                    "key {} in slot {} behind the cursor {}, unseen by an exact pass",
                    key,
                    at,
                    self.shard.cursor
                );
            }
        }
        // Keys the model never stored are not held, so the shard holds
        // exactly the model's keys it was seen to hold.
        prop_assert_eq!(held, self.shard.len(), "entries of keys never stored");
        prop_assert!(
            self.shard.earliest_forget <= least,
            "earliest_forget {} above a held key's {}",
            self.shard.earliest_forget,
            least
        );

        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            if let DebugValue::Counter(n) = value {
                match key.key().name() {
                    KEYS_RECLAIMED => self.reclaimed += n,
                    KEYS_REFUSED => self.refused += n,
                    _ => {}
                }
            }
        }
        prop_assert_eq!(self.refused, self.refusals, "refused counter");
        let gone = self.inserted - self.reset_removed - self.shard.len() as u64;
        prop_assert_eq!(self.reclaimed, gone, "reclaimed counter");
        Ok(())
    }
}

fn run<A: Packing>(algorithm: A, setup: Setup, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut run = Run::new(algorithm, setup);
    for op in ops {
        run.apply(op)?;
    }
    Ok(())
}

/// A check of one of a few keys, after the clock moved on by some µs.
#[derive(Debug, Clone)]
struct FarCheck {
    key: usize,
    cost: u64,
    advance: u64,
}

/// Sets the clock back `windows` windows (more than the base's lag)
/// after a check at [`START`], then checks keys: each decision of the shard
/// is one the core would take on the same admitted checks, or stricter.
fn no_looser_far_back<A: Packing>(
    algorithm: A,
    windows: u64,
    checks: &[FarCheck],
) -> Result<(), TestCaseError> {
    let setup = Setup {
        homes: (0..KEYS as u64).collect(),
        cap: None,
        when_full: WhenFull::DenyNewKeys,
        grace_us: 0,
    };
    let mut run = Run::new(algorithm, setup);
    let unit = unit(&run.rules.algorithm, 1000);
    let last = KEYS - 1;
    prop_assert!(run
        .shard
        .check(&run.rules, run.fps[last], START, 1)
        .is_ok_and(|d| d.allowed));
    let mut now = START - windows * unit;
    // The core's states, taking only what the shard admitted.
    let mut model: HashMap<usize, A::State> = HashMap::new();
    for check in checks {
        now += check.advance;
        let cost = check.cost.min(run.rules.algorithm.limit());
        let state = model.get(&check.key).copied().unwrap_or_default();
        let (expected, next) = run.rules.algorithm.check(&state, now, cost).unwrap();
        let got = run
            .shard
            .check(&run.rules, run.fps[check.key], now, cost)
            .unwrap();
        prop_assert!(!got.allowed || expected.allowed, "{:?} {:?}", got, expected);
        // What was left before the check: an allowed decision's remaining
        // is counted after the cost.
        let left = |d: ratelimit_core::Decision| d.remaining + if d.allowed { cost } else { 0 };
        prop_assert!(left(got) <= left(expected), "{:?} {:?}", got, expected);
        if got.allowed {
            if !model.contains_key(&check.key) {
                // A new key's state is stored at the base window if the
                // core gave it an earlier one.
                let at = run.shard.slots.find(run.fps[check.key]).expect("stored");
                let stored = A::unpack(run.shard.slots.state(at), run.shard.base);
                let window = A::window_of(&next).max(run.shard.base);
                prop_assert_eq!(A::window_of(&stored), window);
            }
            model.insert(check.key, next);
        }
    }
    Ok(())
}

fn far_checks() -> impl Strategy<Value = Vec<FarCheck>> {
    let check = (
        0..4usize,
        1u64..=4,
        prop_oneof![Just(0u64), 0u64..4_000, 0u64..20_000],
    )
        .prop_map(|(key, cost, advance)| FarCheck { key, cost, advance });
    prop::collection::vec(check, 1..60)
}

/// Windows back from [`START`]: past the base, by more than the checks
/// then move the clock on (60 of at most 20 ms), or by far more.
fn far_back() -> impl Strategy<Value = u64> {
    prop_oneof![
        (BASE_LAG + 1_200)..(BASE_LAG + 1_300),
        (BASE_LAG + 1_200)..(1 << 34)
    ]
}

/// A sliding window of `limit` over `ms` milliseconds, stored narrow.
fn narrow(limit: u64, ms: u64) -> NarrowSliding {
    NarrowSliding::new(SlidingWindow::new(limit, Duration::from_millis(ms)).unwrap()).unwrap()
}

/// Limits of narrow sliding windows: small ones, which the checks exhaust,
/// and the largest, whose counts take all 16 bits.
fn narrow_limit() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 1u64..=4, 1 => Just(u64::from(u16::MAX))]
}

proptest! {
    #[test]
    fn fixed_window_far_back_is_no_looser_than_the_core(
        limit in 1u64..=4, ms in 1u64..=3, windows in far_back(), checks in far_checks(),
    ) {
        let policy = FixedWindow::new(limit, Duration::from_millis(ms)).unwrap();
        no_looser_far_back(policy, windows, &checks)?;
    }

    #[test]
    fn sliding_window_far_back_is_no_looser_than_the_core(
        limit in 1u64..=4, ms in 1u64..=3, windows in far_back(), checks in far_checks(),
    ) {
        let policy = SlidingWindow::new(limit, Duration::from_millis(ms)).unwrap();
        no_looser_far_back(policy, windows, &checks)?;
    }

    #[test]
    fn narrow_sliding_window_far_back_is_no_looser_than_the_core(
        limit in narrow_limit(), ms in 1u64..=3, windows in far_back(), checks in far_checks(),
    ) {
        no_looser_far_back(narrow(limit, ms), windows, &checks)?;
    }
}

proptest! {
    // Generating the operations dominates the run time in a debug build,
    // and ChaCha without optimisation is slow: XorShift is random enough.
    #![proptest_config(ProptestConfig {
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    })]

    #[test]
    fn fixed_window_shard_matches_the_model(
        limit in 1u64..=4, ms in 1u64..=3, setup in setup(), ops in ops(),
    ) {
        run(FixedWindow::new(limit, Duration::from_millis(ms)).unwrap(), setup, &ops)?;
    }

    #[test]
    fn sliding_window_shard_matches_the_model(
        limit in 1u64..=4, ms in 1u64..=3, setup in setup(), ops in ops(),
    ) {
        run(SlidingWindow::new(limit, Duration::from_millis(ms)).unwrap(), setup, &ops)?;
    }

    #[test]
    fn narrow_sliding_window_shard_matches_the_model(
        limit in narrow_limit(), ms in 1u64..=3, setup in setup(), ops in ops(),
    ) {
        run(narrow(limit, ms), setup, &ops)?;
    }

    #[test]
    fn token_bucket_shard_matches_the_model(
        capacity in 1u64..=4, refill in 1u64..=3, ms in 1u64..=3, setup in setup(), ops in ops(),
    ) {
        let bucket = TokenBucket::new(capacity, refill, Duration::from_millis(ms)).unwrap();
        run(bucket, setup, &ops)?;
    }
}
