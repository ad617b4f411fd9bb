//! One independently locked part of the table, and the rules it applies.

use ratelimit_core::{Algorithm, Decision, Error};

use crate::fingerprint::Fingerprint;
use crate::meters::Meters;
use crate::packed::{Packing, BASE_LAG, OFFSETS};
use crate::slots::{Slots, Vacant};
use crate::WhenFull;

#[cfg(test)]
mod tests;

/// Slots the sweeper examines per step. A table grows only by inserts, and
/// every insert takes a step: a table of `n` slots takes at least `3n/8`
/// inserts to double from 7/16 full, in which time the sweeper passes over
/// it three times. Idle keys are forgotten faster than new ones arrive.
const SWEEP_STEP: usize = 8;

/// Checks of stored keys between two sweep steps in a clean shard, so that
/// traffic on known keys alone also finds garbage, at a fraction of a step
/// per check.
const HIT_SWEEP_PERIOD: u32 = 16;

/// Checks of stored keys in a clean shard between two turns it lends to
/// another shard's sweeper (a multiple of [`HIT_SWEEP_PERIOD`]). A shard
/// that no call reaches cannot sweep itself: with hundreds of shards and
/// traffic on few keys, many shards see no call at all, and the idle keys
/// they hold would stay until [`purge_idle`](crate::MemoryLimiter::purge_idle).
/// Lent turns go to the other shards in rotation, so each is swept as long
/// as any shard has calls.
pub(crate) const LEND_PERIOD: u32 = 2 * HIT_SWEEP_PERIOD;

/// Sweep steps a lent turn takes at most; it stops as soon as the shard it
/// sweeps holds nothing that may be forgotten.
const LENT_STEPS: usize = 64;

/// What every shard of one limiter applies.
#[derive(Debug)]
pub(crate) struct Rules<A> {
    pub(crate) algorithm: A,
    /// Most keys per shard (`usize::MAX` without a cap).
    pub(crate) cap: usize,
    pub(crate) when_full: WhenFull,
    /// Microseconds an idle state is kept before it may be forgotten.
    pub(crate) grace_us: u64,
    /// Where reclaimed and refused keys are counted.
    pub(crate) meters: Meters,
}

impl<A: Algorithm> Rules<A> {
    /// The first instant from which a stored state may be forgotten.
    #[inline]
    fn forget_at(&self, state: A::State) -> u64 {
        self.algorithm
            .expires_at(&state)
            .saturating_add(self.grace_us)
    }
}

/// A table of entries with an incremental sweeper.
#[derive(Debug)]
pub(crate) struct Shard<A: Packing> {
    slots: Slots<A::Packed>,
    /// The window stored window offsets count from (`packed.rs`): every
    /// stored state's window is in `base..base + 2^32`.
    base: u64,
    /// The last instant whose window is before `base + 2^32`; a check
    /// after it moves the base first. `u64::MAX` for states without a
    /// window once set; `0` before the first check.
    fits_until: u64,
    /// The next slot the sweeper examines.
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
    /// bound taken once stays a bound. Before it, nothing can be idle: the
    /// sweeper does not run, and a full shard does not scan.
    earliest_forget: u64,
    /// The least `forget_at` seen by the current pass (entries kept, and
    /// entries inserted meanwhile): the exact bound once the pass ends.
    pass_earliest: u64,
    /// Whether the current pass sees every entry: false once entries moved
    /// behind the cursor (a reset's shift, a wrapped insert, a rebuild).
    pass_exact: bool,
}

impl<A: Packing> Default for Shard<A> {
    fn default() -> Self {
        Self {
            slots: Slots::default(),
            base: 0,
            fits_until: 0,
            cursor: 0,
            hits: 0,
            eager: false,
            pass_forgot: false,
            earliest_forget: u64::MAX,
            pass_earliest: u64::MAX,
            pass_exact: true,
        }
    }
}

impl<A: Packing> Shard<A> {
    /// [`check_lending`](Self::check_lending) with no other shard to lend
    /// a turn to.
    #[cfg(test)]
    pub(crate) fn check(
        &mut self,
        rules: &Rules<A>,
        fp: Fingerprint,
        now: u64,
        cost: u64,
    ) -> Result<Decision, Error> {
        self.check_lending(rules, fp, now, cost, |_| {})
    }

    /// `Algorithm::check` on the key's stored state, storing the result.
    /// When a turn of this shard's sweeper is to be lent (see
    /// [`LEND_PERIOD`]), calls `lend` with the number of lending periods
    /// this shard has had, which picks the shard to sweep.
    #[inline]
    pub(crate) fn check_lending(
        &mut self,
        rules: &Rules<A>,
        fp: Fingerprint,
        now: u64,
        cost: u64,
        lend: impl FnOnce(u32),
    ) -> Result<Decision, Error> {
        if now > self.fits_until {
            self.rebase(rules, now);
        }
        // Not found, the probe gives the key's place: inserting it then
        // only moves the entries after it on (`RobinHood::insert_at`), a
        // new key's check 12-15% faster (`BENCHMARKS.md`); probing again
        // in `check_new`, on lines the lookup had just brought in, kept
        // half the gain.
        let at = match self.slots.probe(fp) {
            Ok(at) => at,
            Err(vacant) => return self.check_new(rules, fp, vacant, now, cost),
        };
        let state = A::unpack(self.slots.state(at), self.base);
        let (decision, next) = rules.algorithm.check(&state, now, cost)?;
        if decision.allowed {
            self.slots.set_state(at, A::pack(next, self.base));
        }
        self.hits = self.hits.wrapping_add(1);
        if self.eager || self.hits.is_multiple_of(HIT_SWEEP_PERIOD) {
            self.sweep_step(rules, now);
            if now < self.earliest_forget && self.hits.is_multiple_of(LEND_PERIOD) {
                lend(self.hits / LEND_PERIOD);
            }
        }
        Ok(decision)
    }

    /// [`check_lending`](Self::check_lending) of a key not stored, whose
    /// place the probe gave as `vacant`.
    fn check_new(
        &mut self,
        rules: &Rules<A>,
        fp: Fingerprint,
        mut vacant: Vacant,
        now: u64,
        cost: u64,
    ) -> Result<Decision, Error> {
        let (decision, next) = rules.algorithm.check(&A::State::default(), now, cost)?;
        if !decision.allowed {
            // A fresh key admits any valid cost; kept for clarity only.
            return Ok(decision);
        }
        if self.slots.len() >= rules.cap {
            if !self.make_room(rules, now) {
                rules.meters.refused.increment(1);
                return Ok(match rules.when_full {
                    WhenFull::DenyNewKeys => {
                        let wait = self.earliest_forget.saturating_sub(now).max(1);
                        Decision::from_micros(false, decision.limit, 0, wait, wait)
                    }
                    WhenFull::AllowUnlimited => decision,
                });
            }
            // Making room may have moved the slots: the place is found
            // again.
            vacant = self.slots.probe(fp).expect_err("a key not stored");
        }
        // Stored as it is, unless the clock went back past the base: then
        // at the base window (`packed.rs`). A stored key's next window is
        // its stored one or later, so only here can it be before the base.
        let next = A::clamp(next, self.base);
        let forget_at = rules.forget_at(next);
        self.earliest_forget = self.earliest_forget.min(forget_at);
        self.pass_earliest = self.pass_earliest.min(forget_at);
        if self
            .slots
            .insert_vacant(vacant, fp, A::pack(next, self.base))
        {
            self.pass_exact = false;
        }
        self.sweep_step(rules, now);
        Ok(decision)
    }

    /// `Algorithm::peek` on the key's stored state.
    #[inline]
    pub(crate) fn peek(&self, rules: &Rules<A>, fp: Fingerprint, now: u64) -> Decision {
        let state = self.slots.find(fp).map_or_else(A::State::default, |at| {
            A::unpack(self.slots.state(at), self.base)
        });
        rules.algorithm.peek(&state, now)
    }

    /// Forgets the key.
    pub(crate) fn reset(&mut self, fp: Fingerprint) {
        if let Some(at) = self.slots.find(fp) {
            self.slots.remove_at(at);
            // The shift may carry an entry back past the sweeper's cursor.
            self.pass_exact = false;
        }
    }

    /// Forgets every key that may be forgotten at `now`; returns how many.
    pub(crate) fn purge(&mut self, rules: &Rules<A>, now: u64) -> usize {
        let before = self.slots.len();
        let mut earliest = u64::MAX;
        let base = self.base;
        self.slots.retain(|packed| {
            let at = rules.forget_at(A::unpack(packed, base));
            let keep = now < at;
            if keep {
                earliest = earliest.min(at);
            }
            keep
        });
        self.earliest_forget = earliest;
        self.slots.shrink_if_sparse();
        self.restart_pass();
        let forgotten = before - self.slots.len();
        if forgotten > 0 {
            rules.meters.reclaimed.increment(forgotten as u64);
        }
        forgotten
    }

    /// Stored keys.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Bytes the table has allocated.
    pub(crate) fn allocation_size(&self) -> usize {
        self.slots.allocation_size()
    }

    /// Makes room for one more key in a full shard, forgetting idle keys;
    /// returns whether there is room now. Scans only when some key may
    /// have become idle, so a flood of new keys against a shard of live
    /// keys costs one comparison each.
    fn make_room(&mut self, rules: &Rules<A>, now: u64) -> bool {
        if now >= self.earliest_forget {
            self.purge(rules, now);
        }
        self.slots.len() < rules.cap
    }

    /// Examines the next few slots and forgets the idle keys there; does
    /// nothing while no key can be idle.
    ///
    /// The bound it keeps: at a fixed `now`, with no other call between,
    /// steps forget every key idle at `now` within `(slots − cursor) +
    /// slots + keys` of their turns (slots, cursor and keys as before the
    /// first step). Each of a step's [`SWEEP_STEP`] turns either forgets a
    /// key or moves the cursor on; ending the current pass moves it
    /// `slots − cursor` times, and a whole pass `slots` times. A shrink
    /// restarts the pass on a table of at most half the slots, which adds
    /// that table's slots; so `⌈(3 · slots + keys) / SWEEP_STEP⌉` steps
    /// always suffice. (`earliest_forget`, a lower bound, cannot stop the
    /// sweeper early: while a key is idle at `now`, it is at most `now`.)
    fn sweep_step(&mut self, rules: &Rules<A>, now: u64) {
        if now < self.earliest_forget {
            return;
        }
        let count = self.slots.slot_count();
        if count == 0 {
            // Nothing was ever stored (only `now == u64::MAX` gets here).
            return;
        }
        // Counted once per step, not per key: one call on the handle.
        let mut forgotten = 0u64;
        for _ in 0..SWEEP_STEP {
            if self.cursor >= count {
                // A pass is over: stay eager only if it found garbage, and
                // tighten the bound if the pass saw every entry.
                self.eager = self.pass_forgot;
                if self.pass_exact {
                    self.earliest_forget = self.pass_earliest;
                }
                self.restart_pass();
            }
            let state = self
                .slots
                .occupied(self.cursor)
                .map(|packed| A::unpack(packed, self.base));
            match state {
                // Removal shifts the next entry into this slot: look at it
                // again on the next turn.
                Some(state) if now >= rules.forget_at(state) => {
                    self.slots.remove_at(self.cursor);
                    self.pass_forgot = true;
                    self.eager = true;
                    forgotten += 1;
                }
                Some(state) => {
                    self.pass_earliest = self.pass_earliest.min(rules.forget_at(state));
                    self.cursor += 1;
                }
                None => self.cursor += 1,
            }
        }
        if forgotten > 0 {
            rules.meters.reclaimed.increment(forgotten);
        }
        if self.eager && self.slots.shrink_if_sparse() {
            self.restart_pass();
        }
    }

    /// Moves the base window to [`BASE_LAG`] windows before `now`'s, so
    /// that every window from there to `now`'s and on for `2^31` more can
    /// be stored; forgets the states of windows before the new base, which
    /// are idle at `now` (`packed.rs` argues both). Runs when a check's
    /// `now` is past `fits_until`: once per `2^31` windows of clock time
    /// at most, and once on a shard's first check.
    // Never inlined: its loops would take registers from the check.
    #[cold]
    #[inline(never)]
    fn rebase(&mut self, rules: &Rules<A>, now: u64) {
        let Some(window_us) = rules.algorithm.window_us() else {
            self.fits_until = u64::MAX;
            return;
        };
        let base = (now / window_us).saturating_sub(BASE_LAG);
        if base > self.base {
            let old = self.base;
            let before = self.slots.len();
            // Two walks: a removal can carry an entry from the start of an
            // array to its end, where `retain` sees it twice, which is
            // harmless for a test but not for a change of base.
            self.slots
                .retain(|packed| A::window_of(&A::unpack(packed, old)) >= base);
            self.slots
                .map_states(|packed| A::pack(A::unpack(packed, old), base));
            self.base = base;
            let forgotten = before - self.slots.len();
            if forgotten > 0 {
                rules.meters.reclaimed.increment(forgotten as u64);
            }
            // Entries may have shifted behind the cursor.
            self.restart_pass();
        }
        self.fits_until = (base + OFFSETS)
            .checked_mul(window_us)
            .map_or(u64::MAX, |end| end - 1);
    }

    /// A turn lent by another shard: up to [`LENT_STEPS`] sweep steps, while
    /// some key here may be idle at `now`.
    pub(crate) fn sweep_lent(&mut self, rules: &Rules<A>, now: u64) {
        for _ in 0..LENT_STEPS {
            if now < self.earliest_forget {
                break;
            }
            self.sweep_step(rules, now);
        }
    }

    /// Starts a sweeper pass from the first slot.
    fn restart_pass(&mut self) {
        self.cursor = 0;
        self.pass_forgot = false;
        self.pass_earliest = u64::MAX;
        self.pass_exact = true;
    }
}
