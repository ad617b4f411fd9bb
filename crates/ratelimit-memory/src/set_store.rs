//! The sharded table of a set limiter: keys to [`SetState`]s, one lock per
//! shard, each state updated in place by `PolicySet`'s pure functions.
//!
//! Several limiters may share one table, each applying its own set (see
//! `MemorySetLimiter::reconfigured`): every stored state is tagged with
//! the generation of the set it is aligned with, and a limiter of another
//! set realigns it, policy by policy by name, before using it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use parking_lot::RwLock;
use ratelimit_core::{
    Decision, Error, LeaseId, Limit, PartState, Policy, PolicyReceipt, PolicySet, PolicyState,
    RateState, Receipt, SetCheck, SetDecision, SetState,
};

use crate::fingerprint::Fingerprint;
use crate::lock::ShardLock;
use crate::meters::Meters;

/// A shard is swept whole when it has grown to this many keys at least and
/// to twice what it held after its last sweep: the sweeps cost O(1) per
/// new key, amortized, and a shard holds at most about twice its live keys.
const MIN_SWEEP_LEN: usize = 32;

/// At most this many forgotten states a shard keeps, emptied, for the next
/// new keys: a key that comes and goes (a lease taken, released, swept)
/// then costs no allocation.
const MAX_SPARES: usize = MIN_SWEEP_LEN;

/// A spare state keeps its lease lists only up to this many leases of
/// capacity each; a larger one is freed.
const MAX_SPARE_LEASES: usize = 16;

/// A key as the table holds it: its fingerprint (the key itself when
/// short, 95 bits of a keyed SipHash when long; see `fingerprint.rs`).
#[derive(Clone, Copy, PartialEq, Eq)]
struct SetKey(Fingerprint);

impl Hash for SetKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

/// Passes the placement hash through. Its top 16 bits chose the shard, so
/// they are the same for every key of one shard: rotated down, so that the
/// map's control bytes (the top bits) and buckets (the low bits) see bits
/// that vary.
#[derive(Default)]
struct Placed(u64);

impl Hasher for Placed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is called (see `SetKey`); a fold, for safety.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash.rotate_right(16);
    }
}

/// What every shard of one table applies, whatever set a limiter of it
/// applies.
#[derive(Debug)]
pub(crate) struct SetRules {
    /// Most keys per shard (`usize::MAX` without a cap).
    pub(crate) cap: usize,
    /// Microseconds an idle state is kept before it may be forgotten.
    pub(crate) grace_us: u64,
    pub(crate) meters: Meters,
}

/// The set one limiter of a table applies, and its generation: the tag of
/// the states aligned with it.
#[derive(Debug, Clone)]
pub(crate) struct SetView {
    pub(crate) set: Arc<PolicySet>,
    gen: u32,
}

impl SetView {
    pub(crate) fn set(&self) -> &PolicySet {
        &self.set
    }
}

impl SetRules {
    /// The first instant from which `state`, aligned with `set`, may be
    /// forgotten: its grace after the later of [`PolicySet::expires_at`]
    /// and [`horizon`].
    fn forget_at(&self, set: &PolicySet, state: &SetState) -> u64 {
        set.expires_at(state)
            .max(horizon(set, state))
            .saturating_add(self.grace_us)
    }

    /// Lowers a shard's bound (`SetShard::earliest_forget`) to `state`'s
    /// `forget_at` after an update. Kept only with a cap, where a full
    /// shard needs it to refuse a flood of new keys without scanning.
    #[inline]
    fn lower(&self, set: &PolicySet, bound: &mut u64, state: &SetState) {
        if self.cap != usize::MAX {
            *bound = (*bound).min(self.forget_at(set, state));
        }
    }

    /// The answer to a new key in a full shard: every policy denies, with
    /// nothing left, until the shard's first key may be forgotten.
    fn full(set: &PolicySet, wait: u64) -> SetDecision {
        SetDecision::from_decisions(
            set.limits()
                .iter()
                .map(|l| Decision::from_micros(false, l.limit().limit(), 0, wait, wait)),
        )
    }
}

/// `state`, aligned with `from`, realigned with `to`: each policy of `to`
/// keeps the part of the policy of `from` of the same name if it can mean
/// the same there (a rate policy of the same algorithm and, for a window,
/// the same window: its count is kept whatever the new limit; a token
/// bucket's `tat` and ledger, in µs, whatever its new rate; a concurrency
/// policy's leases, with their expiries), and starts empty otherwise.
///
/// A token bucket's tokens in use at `now` are kept in tokens: the time
/// its `tat` is ahead of `now` is rescaled by the ratio of the emission
/// intervals (rounded up), so a new rate neither frees nor takes any.
fn realign(from: &PolicySet, to: &PolicySet, state: SetState, now: u64) -> SetState {
    if state.parts.len() != from.len() {
        return SetState::default();
    }
    let mut old: Vec<Option<PartState>> = state.parts.into_iter().map(Some).collect();
    let parts = to
        .limits()
        .iter()
        .map(|l| {
            let kept = from.index_of(l.name()).and_then(|j| {
                let part = old[j].take()?;
                match (from.limits()[j].limit(), l.limit(), part) {
                    (Limit::Rate(a), Limit::Rate(b), PartState::Rate(s))
                        if a.algorithm() == b.algorithm()
                            && (matches!(a, Policy::TokenBucket(_))
                                || a.window() == b.window()) =>
                    {
                        Some(PartState::Rate(rescaled(&a, &b, s, now)))
                    }
                    (Limit::Concurrency(_), Limit::Concurrency(_), PartState::Leases(held)) => {
                        Some(PartState::Leases(held))
                    }
                    _ => None,
                }
            });
            kept.unwrap_or_else(|| match l.limit() {
                Limit::Rate(_) => PartState::Rate(RateState::default()),
                Limit::Concurrency(_) => PartState::Leases(Vec::new()),
            })
        })
        .collect();
    SetState { parts }
}

/// The largest stored instant kept exact (`SPEC.md` section 1).
const MAX_INSTANT: u64 = (1 << 53) - 1;

/// A token bucket's state of `from` read by `to`: the tokens in use at
/// `now` kept. A window's state as it is.
fn rescaled(from: &Policy, to: &Policy, mut s: RateState, now: u64) -> RateState {
    if let (Policy::TokenBucket(a), Policy::TokenBucket(b), PolicyState::TokenBucket(bucket)) =
        (from, to, &mut s.state)
    {
        let (t_from, t_to) = (a.emission_interval_micros(), b.emission_interval_micros());
        if t_from != t_to && bucket.tat > now {
            let ahead = u128::from(bucket.tat - now) * u128::from(t_to);
            let ahead = ahead.div_ceil(u128::from(t_from));
            let tat = u128::from(now) + ahead;
            bucket.tat = u64::try_from(tat.min(u128::from(MAX_INSTANT))).unwrap_or(MAX_INSTANT);
        }
    }
    s
}

/// The first instant from which, at every later instant, `state` answers
/// every operation as a key never seen does, receipts included.
///
/// [`PolicySet::expires_at`] is that instant for decisions while time moves
/// forward. A clock that went back also sees what decides no count: a
/// gate's window rolled forward with nothing counted (the receipts of
/// later checks name that window), and a settling bucket's `seen` (checks
/// and settles apply `max(now, seen)`). So that an idle grace covers a
/// clock going back, a state is kept until both are behind too: the end of
/// its stored window, and the instant after a bucket's `tat` and `seen`
/// (at `seen` itself a fresh key answers alike; one microsecond earlier it
/// does not, so a gate on a new key of a settling bucket is stored).
fn horizon(set: &PolicySet, state: &SetState) -> u64 {
    set.limits()
        .iter()
        .zip(&state.parts)
        .map(|(l, part)| match (l.limit(), part) {
            (Limit::Rate(p), PartState::Rate(s)) => {
                let window_us = u64::try_from(p.window().as_micros()).unwrap_or(u64::MAX);
                let end = |k: u64| k.saturating_add(1).saturating_mul(window_us);
                match s.state {
                    PolicyState::Empty => s.ledger.seen.saturating_add(1),
                    PolicyState::FixedWindow(w) => end(w.window),
                    PolicyState::SlidingWindow(w) => end(w.window),
                    PolicyState::TokenBucket(b) => b.tat.max(s.ledger.seen).saturating_add(1),
                }
            }
            // Leases count in `expires_at`; a part of another kind (a state
            // not aligned with the set) reads as never seen.
            (Limit::Concurrency(_), PartState::Leases(_))
            | (Limit::Rate(_), PartState::Leases(_))
            | (Limit::Concurrency(_), PartState::Rate(_)) => 0,
        })
        .max()
        .unwrap_or(0)
}

/// A stored state, tagged with the generation of the set it is aligned
/// with.
struct Entry {
    gen: u32,
    state: SetState,
}

/// One shard: a map of keys to states, and when to sweep it.
#[derive(Default)]
struct SetShard {
    keys: HashMap<SetKey, Entry, BuildHasherDefault<Placed>>,
    /// With a cap: a lower bound of `forget_at` over the stored keys
    /// (`u64::MAX` when there are none), lowered by every update, so a
    /// full shard knows when nothing can be forgotten yet. Without a cap,
    /// not kept.
    earliest_forget: u64,
    /// Sweep when the shard reaches this many keys.
    sweep_at: usize,
    /// Forgotten states, emptied, each tagged with the generation of the
    /// set it is aligned with, kept for reuse (at most [`MAX_SPARES`]).
    spares: Vec<Entry>,
}

/// Empties `state` in place, keeping its allocations: the state of a key
/// never seen, aligned with `set`. False when it is not worth keeping (not
/// aligned with the set, or holding a large lease list).
fn empty_for_reuse(set: &PolicySet, state: &mut SetState) -> bool {
    if state.parts.len() != set.len() {
        return false;
    }
    for (l, part) in set.limits().iter().zip(&mut state.parts) {
        match (l.limit(), part) {
            (Limit::Rate(_), PartState::Rate(s)) => *s = RateState::default(),
            (Limit::Concurrency(_), PartState::Leases(held))
                if held.capacity() <= MAX_SPARE_LEASES =>
            {
                held.clear();
            }
            _ => return false,
        }
    }
    true
}

/// A state of `view`'s set for a key not stored: a spare if there is one
/// (emptied: the state of a key never seen, as [`SetState::aligned`]; one
/// kept under another set is emptied again for this one, or dropped when
/// it cannot be), else [`SetState::default`], which every operation
/// aligns first.
#[inline]
fn spare(spares: &mut Vec<Entry>, view: &SetView) -> SetState {
    match spares.pop() {
        Some(entry) if entry.gen == view.gen => entry.state,
        Some(entry) => respare(entry, view),
        None => SetState::default(),
    }
}

/// A spare kept under another set, emptied again for `view`'s set, or a
/// default state when its shape differs: out of line, as rare as a new set.
#[cold]
#[inline(never)]
fn respare(mut entry: Entry, view: &SetView) -> SetState {
    if empty_for_reuse(&view.set, &mut entry.state) {
        entry.state
    } else {
        SetState::default()
    }
}

/// Keeps `state`, aligned with `set` of generation `gen` and no longer
/// stored, for the next new key, if there is room and it is worth keeping.
fn keep_spare(spares: &mut Vec<Entry>, set: &PolicySet, gen: u32, mut state: SetState) {
    if spares.len() < MAX_SPARES && empty_for_reuse(set, &mut state) {
        spares.push(Entry { gen, state });
    }
}

impl SetShard {
    fn new() -> Self {
        Self {
            keys: HashMap::default(),
            earliest_forget: u64::MAX,
            sweep_at: MIN_SWEEP_LEN,
            spares: Vec::new(),
        }
    }

    /// Stores a state of `view`'s set for a key not stored, if it is not
    /// idle. `force` stores it even in a full shard (a settle's charge).
    /// Returns false when the shard is full and the state was not stored.
    fn insert(
        &mut self,
        store: &SetStore,
        view: &SetView,
        key: SetKey,
        state: SetState,
        now: u64,
        force: bool,
    ) -> bool {
        let rules = &store.rules;
        let forget_at = rules.forget_at(&view.set, &state);
        if now >= forget_at {
            // Equivalent to a key never seen: nothing to keep.
            keep_spare(&mut self.spares, &view.set, view.gen, state);
            return true;
        }
        if self.keys.len() >= rules.cap && !self.make_room(store, now) && !force {
            rules.meters.refused.increment(1);
            keep_spare(&mut self.spares, &view.set, view.gen, state);
            return false;
        }
        if self.keys.len() >= self.sweep_at {
            self.purge(store, now);
        }
        self.earliest_forget = self.earliest_forget.min(forget_at);
        self.keys.insert(
            key,
            Entry {
                gen: view.gen,
                state,
            },
        );
        true
    }

    /// Makes room for one more key in a full shard; returns whether there
    /// is room now. Scans only when some key may have become idle.
    fn make_room(&mut self, store: &SetStore, now: u64) -> bool {
        if now >= self.earliest_forget {
            self.purge(store, now);
        }
        self.keys.len() < store.rules.cap
    }

    /// Forgets every key that may be forgotten at `now`, each judged by
    /// the set it is aligned with; returns how many.
    fn purge(&mut self, store: &SetStore, now: u64) -> usize {
        let rules = &store.rules;
        let sets = store.sets.read();
        let before = self.keys.len();
        let mut earliest = u64::MAX;
        let spares = &mut self.spares;
        self.keys.retain(|_, entry| {
            let set = &sets[entry.gen as usize];
            let at = rules.forget_at(set, &entry.state);
            let keep = now < at;
            if keep {
                earliest = earliest.min(at);
            } else if spares.len() < MAX_SPARES && empty_for_reuse(set, &mut entry.state) {
                spares.push(Entry {
                    gen: entry.gen,
                    state: std::mem::take(&mut entry.state),
                });
            }
            keep
        });
        drop(sets);
        self.earliest_forget = earliest;
        let after = self.keys.len();
        self.sweep_at = after.saturating_mul(2).max(MIN_SWEEP_LEN);
        if self.keys.capacity() > 4 * after + 4 * MIN_SWEEP_LEN {
            self.keys.shrink_to(2 * after);
        }
        let forgotten = before - after;
        if forgotten > 0 {
            rules.meters.reclaimed.increment(forgotten as u64);
        }
        forgotten
    }
}

/// Pads a shard to its own cache lines (see `table.rs`). Its lock is the
/// single-policy table's (`lock.rs`), released by a plain store: one
/// locked instruction per operation instead of `parking_lot`'s two. A
/// locked instruction waits for every store before it, and an answer is
/// hundreds of bytes; the second one was 3–8% of a set check or a lease
/// (`BENCHMARKS.md`).
#[repr(align(128))]
struct Padded(ShardLock<SetShard>);

/// Keys of one or more sets, split over independently locked shards.
/// Every operation takes one shard lock, finds the key once and updates
/// its state in place; no lock is held across an `.await`.
pub(crate) struct SetStore {
    shards: Box<[Padded]>,
    mask: usize,
    rules: SetRules,
    /// The set of each generation, by generation: only ever appended to.
    sets: RwLock<Vec<Arc<PolicySet>>>,
}

/// The state of `fp` in `keys`, realigned with `view`'s set if it was
/// stored by a limiter of another set.
#[inline(always)]
fn stored<'a>(
    store: &SetStore,
    keys: &'a mut HashMap<SetKey, Entry, BuildHasherDefault<Placed>>,
    fp: Fingerprint,
    view: &SetView,
    now: u64,
) -> Option<&'a mut SetState> {
    let entry = keys.get_mut(&SetKey(fp))?;
    if entry.gen != view.gen {
        realign_entry(store, entry, view, now);
    }
    Some(&mut entry.state)
}

/// Realigns `entry`, stored by a limiter of another set, with `view`'s
/// set: out of line, so that the hot paths, where every state is aligned
/// with its limiter's set, carry only the comparison of generations.
#[cold]
#[inline(never)]
fn realign_entry(store: &SetStore, entry: &mut Entry, view: &SetView, now: u64) {
    let from = Arc::clone(&store.sets.read()[entry.gen as usize]);
    entry.state = realign(&from, &view.set, std::mem::take(&mut entry.state), now);
    entry.gen = view.gen;
}

impl SetStore {
    /// A store of `shards` shards (a power of two).
    pub(crate) fn new(rules: SetRules, shards: usize) -> Self {
        debug_assert!(shards.is_power_of_two());
        Self {
            shards: (0..shards)
                .map(|_| Padded(ShardLock::new(SetShard::new())))
                .collect(),
            mask: shards - 1,
            rules,
            sets: RwLock::new(Vec::new()),
        }
    }

    /// The view of a limiter applying `set`: the generation of an equal
    /// set if there is one, else a new generation.
    ///
    /// # Panics
    ///
    /// After 2^32 distinct sets.
    pub(crate) fn view(&self, set: PolicySet) -> SetView {
        let mut sets = self.sets.write();
        if let Some(gen) = sets.iter().position(|s| **s == set) {
            return SetView {
                set: Arc::clone(&sets[gen]),
                gen: u32::try_from(gen).expect("fewer than 2^32 sets"),
            };
        }
        let set = Arc::new(set);
        sets.push(Arc::clone(&set));
        SetView {
            set,
            gen: u32::try_from(sets.len() - 1).expect("fewer than 2^32 sets"),
        }
    }

    pub(crate) fn meters(&self) -> &Meters {
        &self.rules.meters
    }

    #[inline]
    fn shard(&self, fp: Fingerprint) -> &ShardLock<SetShard> {
        &self.shards[fp.shard(self.mask)].0
    }

    /// See [`PolicySet::check`]. Always inlined into the caller (see
    /// `MemorySetLimiter::check_set_sync`).
    #[inline(always)]
    pub(crate) fn check(
        &self,
        view: &SetView,
        fp: Fingerprint,
        key: &[u8],
        now: u64,
        costs: &[u64],
        new_lease: &mut dyn FnMut() -> LeaseId,
    ) -> Result<SetCheck, Error> {
        let mut shard = self.shard(fp).lock();
        let shard = &mut *shard;
        // A stored key: its state is checked in place and the answer
        // returned as the set check built it (not moved again).
        if let Some(state) = stored(self, &mut shard.keys, fp, view, now) {
            let bound = &mut shard.earliest_forget;
            return view
                .set
                .check_set_then(key, state, now, costs, new_lease, |state| {
                    self.rules.lower(&view.set, bound, state);
                });
        }
        self.check_new(shard, view, fp, key, now, costs, new_lease)
    }

    /// [`check`](Self::check) of a key not stored: on a spare state, stored
    /// if it is not idle and the shard has room. Out of line, so that the
    /// stored key's path holds one answer.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn check_new(
        &self,
        shard: &mut SetShard,
        view: &SetView,
        fp: Fingerprint,
        key: &[u8],
        now: u64,
        costs: &[u64],
        new_lease: &mut dyn FnMut() -> LeaseId,
    ) -> Result<SetCheck, Error> {
        let set = &*view.set;
        let mut state = spare(&mut shard.spares, view);
        let check = set.check_set(key, &mut state, now, costs, new_lease);
        if check.is_err() {
            keep_spare(&mut shard.spares, set, view.gen, state);
        } else if !shard.insert(self, view, SetKey(fp), state, now, false) {
            // The lease taken in `state`, if any, was never stored.
            let wait = shard.earliest_forget.saturating_sub(now).max(1);
            return Ok(SetCheck::new(SetRules::full(set, wait), None));
        }
        check
    }

    /// See [`PolicySet::settle`]: a key not stored settles on a fresh
    /// state, which is stored if it holds a charge.
    pub(crate) fn settle(
        &self,
        view: &SetView,
        fp: Fingerprint,
        now: u64,
        parts: &[PolicyReceipt],
        actual: &[u64],
    ) -> Result<SetDecision, Error> {
        let (rules, set) = (&self.rules, &*view.set);
        let mut shard = self.shard(fp).lock();
        let shard = &mut *shard;
        if let Some(state) = stored(self, &mut shard.keys, fp, view, now) {
            let result = set.settle(state, now, parts, actual);
            rules.lower(set, &mut shard.earliest_forget, state);
            return result;
        }
        let mut state = spare(&mut shard.spares, view);
        let result = set.settle(&mut state, now, parts, actual);
        shard.insert(self, view, SetKey(fp), state, now, true);
        result
    }

    /// See [`PolicySet::renew`]: every lease of a key not stored is lost.
    pub(crate) fn renew(
        &self,
        view: &SetView,
        fp: Fingerprint,
        now: u64,
        parts: &mut [PolicyReceipt],
    ) -> bool {
        let (rules, set) = (&self.rules, &*view.set);
        let mut shard = self.shard(fp).lock();
        let shard = &mut *shard;
        match stored(self, &mut shard.keys, fp, view, now) {
            Some(state) => {
                let all = set.renew(state, now, parts);
                rules.lower(set, &mut shard.earliest_forget, state);
                all
            }
            None => set.renew(&mut SetState::default(), now, parts),
        }
    }

    /// See [`PolicySet::release`]; returns how many leases were held.
    pub(crate) fn release(
        &self,
        view: &SetView,
        fp: Fingerprint,
        now: u64,
        receipt: &Receipt,
    ) -> usize {
        let (rules, set) = (&self.rules, &*view.set);
        let mut shard = self.shard(fp).lock();
        let shard = &mut *shard;
        match stored(self, &mut shard.keys, fp, view, now) {
            Some(state) => {
                let freed = set.release(state, now, receipt.parts());
                rules.lower(set, &mut shard.earliest_forget, state);
                freed
            }
            None => 0,
        }
    }

    /// See [`PolicySet::peek`].
    pub(crate) fn peek(&self, view: &SetView, fp: Fingerprint, now: u64) -> SetDecision {
        let mut shard = self.shard(fp).lock();
        match stored(self, &mut shard.keys, fp, view, now) {
            Some(state) => view.set.peek(state, now),
            None => view.set.peek(&SetState::default(), now),
        }
    }

    /// Forgets the key.
    pub(crate) fn reset(&self, fp: Fingerprint) {
        let mut shard = self.shard(fp).lock();
        if let Some(entry) = shard.keys.remove(&SetKey(fp)) {
            let sets = self.sets.read();
            keep_spare(
                &mut shard.spares,
                &sets[entry.gen as usize],
                entry.gen,
                entry.state,
            );
        }
    }

    /// Purges every shard in turn, one lock at a time.
    pub(crate) fn purge(&self, now: u64) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().purge(self, now))
            .sum()
    }

    /// Stored keys, summed shard by shard (not a snapshot under traffic).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().keys.len()).sum()
    }
}

impl std::fmt::Debug for SetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetStore")
            .field("shards", &self.shards.len())
            .field("rules", &self.rules)
            .field("sets", &self.sets.read().len())
            .finish_non_exhaustive()
    }
}
