//! The sharded table of a set limiter: keys to [`SetState`]s, one lock per
//! shard, each state updated in place by `PolicySet`'s pure functions.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use parking_lot::Mutex;
use ratelimit_core::{
    Decision, Error, LeaseId, Limit, PartState, PolicyReceipt, PolicySet, PolicyState, RateState,
    Receipt, SetCheck, SetDecision, SetState,
};

use crate::fingerprint::Fingerprint;
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
/// short, a keyed 128-bit SipHash when long; see `fingerprint.rs`).
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

/// What every shard of one set limiter applies.
#[derive(Debug)]
pub(crate) struct SetRules {
    pub(crate) set: PolicySet,
    /// Most keys per shard (`usize::MAX` without a cap).
    pub(crate) cap: usize,
    /// Microseconds an idle state is kept before it may be forgotten.
    pub(crate) grace_us: u64,
    pub(crate) meters: Meters,
}

impl SetRules {
    /// The first instant from which `state` may be forgotten: its grace
    /// after the later of [`PolicySet::expires_at`] and [`horizon`].
    fn forget_at(&self, state: &SetState) -> u64 {
        self.set
            .expires_at(state)
            .max(horizon(&self.set, state))
            .saturating_add(self.grace_us)
    }

    /// Lowers a shard's bound (`SetShard::earliest_forget`) to `state`'s
    /// `forget_at` after an update. Kept only with a cap, where a full
    /// shard needs it to refuse a flood of new keys without scanning.
    #[inline]
    fn lower(&self, bound: &mut u64, state: &SetState) {
        if self.cap != usize::MAX {
            *bound = (*bound).min(self.forget_at(state));
        }
    }

    /// The answer to a new key in a full shard: every policy denies, with
    /// nothing left, until the shard's first key may be forgotten.
    fn full(&self, wait: u64) -> SetDecision {
        SetDecision::from_decisions(
            self.set
                .limits()
                .iter()
                .map(|l| Decision::from_micros(false, l.limit().limit(), 0, wait, wait)),
        )
    }
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
/// its stored window, and a bucket's `seen`.
fn horizon(set: &PolicySet, state: &SetState) -> u64 {
    set.limits()
        .iter()
        .zip(&state.parts)
        .map(|(l, part)| match (l.limit(), part) {
            (Limit::Rate(p), PartState::Rate(s)) => {
                let window_us = u64::try_from(p.window().as_micros()).unwrap_or(u64::MAX);
                let end = |k: u64| k.saturating_add(1).saturating_mul(window_us);
                match s.state {
                    PolicyState::Empty => s.ledger.seen,
                    PolicyState::FixedWindow(w) => end(w.window),
                    PolicyState::SlidingWindow(w) => end(w.window),
                    PolicyState::TokenBucket(b) => b.tat.max(s.ledger.seen),
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

/// One shard: a map of keys to states, and when to sweep it.
#[derive(Default)]
struct SetShard {
    keys: HashMap<SetKey, SetState, BuildHasherDefault<Placed>>,
    /// With a cap: a lower bound of `forget_at` over the stored keys
    /// (`u64::MAX` when there are none), lowered by every update, so a
    /// full shard knows when nothing can be forgotten yet. Without a cap,
    /// not kept.
    earliest_forget: u64,
    /// Sweep when the shard reaches this many keys.
    sweep_at: usize,
    /// Forgotten states, emptied and aligned with the set, kept for reuse
    /// (at most [`MAX_SPARES`]).
    spares: Vec<SetState>,
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

impl SetShard {
    fn new() -> Self {
        Self {
            keys: HashMap::default(),
            earliest_forget: u64::MAX,
            sweep_at: MIN_SWEEP_LEN,
            spares: Vec::new(),
        }
    }

    /// A state for a key not stored: a spare if there is one (emptied:
    /// the state of a key never seen, as [`SetState::aligned`]), else
    /// [`SetState::default`], which every operation aligns first.
    #[inline]
    fn spare(&mut self) -> SetState {
        self.spares.pop().unwrap_or_default()
    }

    /// Keeps a state no longer stored for the next new key, if there is
    /// room and it is worth keeping.
    fn keep_spare(&mut self, rules: &SetRules, mut state: SetState) {
        if self.spares.len() < MAX_SPARES && empty_for_reuse(&rules.set, &mut state) {
            self.spares.push(state);
        }
    }

    /// Stores a state for a key not stored, if it is not idle. `force`
    /// stores it even in a full shard (a settle's charge).
    /// Returns false when the shard is full and the state was not stored.
    fn insert(
        &mut self,
        rules: &SetRules,
        key: SetKey,
        state: SetState,
        now: u64,
        force: bool,
    ) -> bool {
        let forget_at = rules.forget_at(&state);
        if now >= forget_at {
            // Equivalent to a key never seen: nothing to keep.
            self.keep_spare(rules, state);
            return true;
        }
        if self.keys.len() >= rules.cap && !self.make_room(rules, now) && !force {
            rules.meters.refused.increment(1);
            self.keep_spare(rules, state);
            return false;
        }
        if self.keys.len() >= self.sweep_at {
            self.purge(rules, now);
        }
        self.earliest_forget = self.earliest_forget.min(forget_at);
        self.keys.insert(key, state);
        true
    }

    /// Makes room for one more key in a full shard; returns whether there
    /// is room now. Scans only when some key may have become idle.
    fn make_room(&mut self, rules: &SetRules, now: u64) -> bool {
        if now >= self.earliest_forget {
            self.purge(rules, now);
        }
        self.keys.len() < rules.cap
    }

    /// Forgets every key that may be forgotten at `now`; returns how many.
    fn purge(&mut self, rules: &SetRules, now: u64) -> usize {
        let before = self.keys.len();
        let mut earliest = u64::MAX;
        let spares = &mut self.spares;
        self.keys.retain(|_, state| {
            let at = rules.forget_at(state);
            let keep = now < at;
            if keep {
                earliest = earliest.min(at);
            } else if spares.len() < MAX_SPARES && empty_for_reuse(&rules.set, state) {
                spares.push(std::mem::take(state));
            }
            keep
        });
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

/// Pads a shard to its own cache lines (see `table.rs`).
#[repr(align(128))]
struct Padded(Mutex<SetShard>);

/// Keys of one set, split over independently locked shards. Every
/// operation takes one shard lock, finds the key once and updates its
/// state in place; no lock is held across an `.await`.
pub(crate) struct SetStore {
    shards: Box<[Padded]>,
    mask: usize,
    rules: SetRules,
}

impl SetStore {
    /// A store of `shards` shards (a power of two).
    pub(crate) fn new(rules: SetRules, shards: usize) -> Self {
        debug_assert!(shards.is_power_of_two());
        Self {
            shards: (0..shards)
                .map(|_| Padded(Mutex::new(SetShard::new())))
                .collect(),
            mask: shards - 1,
            rules,
        }
    }

    pub(crate) fn set(&self) -> &PolicySet {
        &self.rules.set
    }

    pub(crate) fn meters(&self) -> &Meters {
        &self.rules.meters
    }

    #[inline]
    fn shard(&self, fp: Fingerprint) -> &Mutex<SetShard> {
        &self.shards[fp.shard(self.mask)].0
    }

    /// See [`PolicySet::check`].
    #[inline]
    pub(crate) fn check(
        &self,
        fp: Fingerprint,
        key: &[u8],
        now: u64,
        costs: &[u64],
        new_lease: &mut dyn FnMut() -> LeaseId,
    ) -> Result<SetCheck, Error> {
        let rules = &self.rules;
        let mut shard = self.shard(fp).lock();
        let shard = &mut *shard;
        // One call site of the (inlined) set check, for a stored key and a
        // new one alike.
        let mut spare;
        let (state, stored) = match shard.keys.get_mut(&SetKey(fp)) {
            Some(state) => (state, true),
            None => {
                spare = shard.spares.pop().unwrap_or_default();
                (&mut spare, false)
            }
        };
        let mut check = rules.set.check_set(key, state, now, costs, new_lease);
        // One value returned on every path (see `PolicySet::check_set`).
        if stored {
            rules.lower(&mut shard.earliest_forget, state);
        } else {
            let state = std::mem::take(state);
            if check.is_err() {
                shard.keep_spare(rules, state);
            } else if !shard.insert(rules, SetKey(fp), state, now, false) {
                // The lease taken in `state`, if any, was never stored.
                let wait = shard.earliest_forget.saturating_sub(now).max(1);
                check = Ok(SetCheck::new(rules.full(wait), None));
            }
        }
        check
    }

    /// See [`PolicySet::settle`]: a key not stored settles on a fresh
    /// state, which is stored if it holds a charge.
    pub(crate) fn settle(
        &self,
        fp: Fingerprint,
        now: u64,
        parts: &[PolicyReceipt],
        actual: &[u64],
    ) -> Result<SetDecision, Error> {
        let rules = &self.rules;
        let mut shard = self.shard(fp).lock();
        let shard = &mut *shard;
        if let Some(state) = shard.keys.get_mut(&SetKey(fp)) {
            let result = rules.set.settle(state, now, parts, actual);
            rules.lower(&mut shard.earliest_forget, state);
            return result;
        }
        let mut state = shard.spare();
        let result = rules.set.settle(&mut state, now, parts, actual);
        shard.insert(rules, SetKey(fp), state, now, true);
        result
    }

    /// See [`PolicySet::renew`]: every lease of a key not stored is lost.
    pub(crate) fn renew(&self, fp: Fingerprint, now: u64, parts: &mut [PolicyReceipt]) -> bool {
        let rules = &self.rules;
        let mut shard = self.shard(fp).lock();
        let shard = &mut *shard;
        match shard.keys.get_mut(&SetKey(fp)) {
            Some(state) => {
                let all = rules.set.renew(state, now, parts);
                rules.lower(&mut shard.earliest_forget, state);
                all
            }
            None => rules.set.renew(&mut SetState::default(), now, parts),
        }
    }

    /// See [`PolicySet::release`]; returns how many leases were held.
    pub(crate) fn release(&self, fp: Fingerprint, now: u64, receipt: &Receipt) -> usize {
        let rules = &self.rules;
        let mut shard = self.shard(fp).lock();
        let shard = &mut *shard;
        match shard.keys.get_mut(&SetKey(fp)) {
            Some(state) => {
                let freed = rules.set.release(state, now, receipt.parts());
                rules.lower(&mut shard.earliest_forget, state);
                freed
            }
            None => 0,
        }
    }

    /// See [`PolicySet::peek`].
    pub(crate) fn peek(&self, fp: Fingerprint, now: u64) -> SetDecision {
        let shard = self.shard(fp).lock();
        match shard.keys.get(&SetKey(fp)) {
            Some(state) => self.rules.set.peek(state, now),
            None => self.rules.set.peek(&SetState::default(), now),
        }
    }

    /// Forgets the key.
    pub(crate) fn reset(&self, fp: Fingerprint) {
        let mut shard = self.shard(fp).lock();
        if let Some(state) = shard.keys.remove(&SetKey(fp)) {
            shard.keep_spare(&self.rules, state);
        }
    }

    /// Purges every shard in turn, one lock at a time.
    pub(crate) fn purge(&self, now: u64) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().purge(&self.rules, now))
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
            .finish_non_exhaustive()
    }
}
