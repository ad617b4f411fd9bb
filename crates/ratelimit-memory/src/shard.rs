//! One independently locked part of the table, and the rules it applies.

use hashbrown::HashTable;
use ratelimit_core::{Decision, Error};

use crate::compact::Compact;
use crate::fingerprint::Fingerprint;
use crate::WhenFull;

/// Buckets the sweeper examines after each insert of a new key. A table
/// grows only by inserts and at most doubles between growths, so examining
/// eight buckets per insert passes over the whole table several times
/// before it can double: idle keys are forgotten faster than new ones
/// arrive.
const SWEEP_STEP: usize = 8;

/// Checks of stored keys between two sweep steps, so that traffic on known
/// keys alone also reclaims memory, at a fraction of a step per check.
const HIT_SWEEP_PERIOD: u32 = 16;

/// Tables at or below this many buckets are never shrunk: the saving
/// would not pay for the rehash.
const MIN_SHRINK_BUCKETS: usize = 64;

/// One stored key: its fingerprint and its policy state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<P> {
    fp: Fingerprint,
    state: P,
}

/// What every shard of one limiter applies.
#[derive(Debug)]
pub(crate) struct Rules<A> {
    pub(crate) algorithm: A,
    /// Most keys per shard (`usize::MAX` without a cap).
    pub(crate) cap: usize,
    pub(crate) when_full: WhenFull,
    /// Microseconds an idle state is kept before it may be forgotten.
    pub(crate) grace_us: u64,
}

impl<A: Compact> Rules<A> {
    /// The first instant from which `state` may be forgotten.
    #[inline]
    fn forget_at(&self, state: &A::State) -> u64 {
        self.algorithm
            .expires_at(state)
            .saturating_add(self.grace_us)
    }
}

/// A hash table of entries with an incremental sweeper.
#[derive(Debug)]
pub(crate) struct Shard<A: Compact> {
    table: HashTable<Entry<A::Packed>>,
    /// The next bucket index the sweeper examines.
    cursor: usize,
    /// Checks of stored keys, counting towards the next sweep step.
    hits: u32,
    /// Whether every check steps the sweeper: set when a step finds an
    /// idle key, cleared by a whole pass that finds none. A shard holding
    /// garbage is swept on every call; a clean one on every
    /// [`HIT_SWEEP_PERIOD`]-th check of a stored key.
    eager: bool,
    /// Whether the current pass has forgotten a key.
    pass_forgot: bool,
    /// A lower bound of `forget_at` over the stored entries (`u64::MAX`
    /// when there are none). Checks only move a state's expiry later, so a
    /// bound taken once stays a bound; it lets a full shard skip its scan
    /// when nothing can have become idle.
    earliest_forget: u64,
}

impl<A: Compact> Default for Shard<A> {
    fn default() -> Self {
        Self {
            table: HashTable::new(),
            cursor: 0,
            hits: 0,
            eager: false,
            pass_forgot: false,
            earliest_forget: u64::MAX,
        }
    }
}

#[inline]
fn rehash<P>(entry: &Entry<P>) -> u64 {
    entry.fp.table_hash()
}

impl<A: Compact> Shard<A> {
    /// `Algorithm::check` on the key's stored state, storing the result.
    pub(crate) fn check(
        &mut self,
        rules: &Rules<A>,
        fp: Fingerprint,
        now: u64,
        cost: u64,
    ) -> Result<Decision, Error> {
        let hash = fp.table_hash();
        if let Some(entry) = self.table.find_mut(hash, |e| e.fp == fp) {
            let (decision, next) = rules.algorithm.check(&A::unpack(entry.state), now, cost)?;
            if decision.allowed {
                entry.state = A::pack(&next);
            }
            self.hits = self.hits.wrapping_add(1);
            if self.eager || self.hits % HIT_SWEEP_PERIOD == 0 {
                self.sweep_step(rules, now);
            }
            return Ok(decision);
        }
        let (decision, next) = rules.algorithm.check(&A::State::default(), now, cost)?;
        if !decision.allowed {
            // A fresh key admits any valid cost; kept for clarity only.
            return Ok(decision);
        }
        if self.table.len() >= rules.cap && !self.make_room(rules, now) {
            return Ok(match rules.when_full {
                WhenFull::DenyNewKeys => {
                    let wait = self.earliest_forget.saturating_sub(now).max(1);
                    Decision::from_micros(false, decision.limit, 0, wait, wait)
                }
                WhenFull::AllowUnlimited => decision,
            });
        }
        self.earliest_forget = self.earliest_forget.min(rules.forget_at(&next));
        self.table.insert_unique(
            hash,
            Entry {
                fp,
                state: A::pack(&next),
            },
            rehash,
        );
        self.sweep_step(rules, now);
        Ok(decision)
    }

    /// `Algorithm::peek` on the key's stored state.
    pub(crate) fn peek(&self, rules: &Rules<A>, fp: Fingerprint, now: u64) -> Decision {
        let state = self
            .table
            .find(fp.table_hash(), |e| e.fp == fp)
            .map_or_else(A::State::default, |e| A::unpack(e.state));
        rules.algorithm.peek(&state, now)
    }

    /// Forgets the key.
    pub(crate) fn reset(&mut self, fp: Fingerprint) {
        if let Ok(entry) = self.table.find_entry(fp.table_hash(), |e| e.fp == fp) {
            entry.remove();
        }
    }

    /// Forgets every key that may be forgotten at `now`; returns how many.
    pub(crate) fn purge(&mut self, rules: &Rules<A>, now: u64) -> usize {
        let before = self.table.len();
        let mut earliest = u64::MAX;
        self.table.retain(|e| {
            let at = rules.forget_at(&A::unpack(e.state));
            earliest = earliest.min(at);
            now < at
        });
        self.earliest_forget = earliest;
        let purged = before - self.table.len();
        self.maybe_shrink();
        purged
    }

    /// Stored keys.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Bytes the table has allocated.
    pub(crate) fn allocation_size(&self) -> usize {
        self.table.allocation_size()
    }

    /// Makes room for one more key in a full shard, forgetting idle keys;
    /// returns whether there is room now. Scans only when some key may
    /// have become idle, so a flood of new keys against a shard of live
    /// keys costs one comparison each.
    fn make_room(&mut self, rules: &Rules<A>, now: u64) -> bool {
        if now >= self.earliest_forget {
            self.purge(rules, now);
        }
        self.table.len() < rules.cap
    }

    /// Examines the next few buckets and forgets the idle keys there.
    fn sweep_step(&mut self, rules: &Rules<A>, now: u64) {
        let buckets = self.table.num_buckets();
        for _ in 0..SWEEP_STEP {
            if self.cursor >= buckets {
                // A pass is over: stay eager only if it found garbage.
                self.cursor = 0;
                self.eager = self.pass_forgot;
                self.pass_forgot = false;
            }
            if let Ok(entry) = self.table.get_bucket_entry(self.cursor) {
                if now >= rules.forget_at(&A::unpack(entry.get().state)) {
                    entry.remove();
                    self.pass_forgot = true;
                    self.eager = true;
                }
            }
            self.cursor += 1;
        }
        if self.eager {
            self.maybe_shrink();
        }
    }

    /// Gives memory back once the table is mostly empty (below 1/8 full,
    /// where it grows at 7/8), to twice what it holds, so it cannot
    /// oscillate between growing and shrinking.
    fn maybe_shrink(&mut self) {
        let buckets = self.table.num_buckets();
        if buckets > MIN_SHRINK_BUCKETS && self.table.len() < buckets / 8 {
            self.table.shrink_to(self.table.len() * 2, rehash);
            self.cursor = 0;
        }
    }
}
