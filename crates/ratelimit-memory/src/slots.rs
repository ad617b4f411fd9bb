//! An open-addressing table of fingerprints and states, in one array.
//!
//! Why not `hashbrown`: its control bytes live apart from the entries, so a
//! lookup in a table larger than the caches misses twice (control group,
//! then entry). Here a key's home slot is known from its fingerprint, and
//! the fingerprint itself marks the slot, so a lookup misses once (and the
//! next line, fetched by the prefetcher, covers the probe).
//!
//! Linear probing with Robin Hood ordering (an entry never sits further
//! from its home than the entry it displaced), so a lookup of a missing key
//! stops early even at the 7/8 maximum load, and deletion shifts the
//! following entries back instead of leaving tombstones. Fingerprints are
//! keyed hashes, uniform whatever the keys, so clusters cannot be forced.

use crate::fingerprint::Fingerprint;

/// Fewest slots a table has.
const MIN_SLOTS: usize = 8;

/// One slot: an entry, or empty when `fp` is [`Fingerprint::EMPTY`].
#[derive(Debug, Clone, Copy)]
struct Slot<P> {
    fp: Fingerprint,
    state: P,
}

/// Entries keyed by fingerprint.
#[derive(Debug)]
pub(crate) struct Slots<P> {
    slots: Box<[Slot<P>]>,
    len: usize,
}

impl<P: Copy + Default> Default for Slots<P> {
    fn default() -> Self {
        Self::with_slots(MIN_SLOTS)
    }
}

/// The slot count that holds `len` entries at no more than half the
/// maximum load.
fn roomy_slots(len: usize) -> usize {
    (len.saturating_mul(2).saturating_mul(8) / 7 + 1)
        .next_power_of_two()
        .max(MIN_SLOTS)
}

impl<P: Copy + Default> Slots<P> {
    fn with_slots(count: usize) -> Self {
        debug_assert!(count.is_power_of_two());
        let empty = Slot {
            fp: Fingerprint::EMPTY,
            state: P::default(),
        };
        Self {
            slots: vec![empty; count].into_boxed_slice(),
            len: 0,
        }
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// How far slot `at` is from the home of the fingerprint it holds.
    #[inline]
    fn distance(&self, at: usize, fp: Fingerprint) -> usize {
        at.wrapping_sub(fp.home()) & self.mask()
    }

    /// The slot holding `fp`, if any.
    #[inline]
    pub(crate) fn find(&self, fp: Fingerprint) -> Option<usize> {
        let mask = self.mask();
        let mut at = fp.home() & mask;
        let mut probed = 0;
        loop {
            let slot = &self.slots[at];
            if slot.fp == fp {
                return Some(at);
            }
            // An empty slot, or an entry closer to its home than `fp` would
            // be here: Robin Hood order says `fp` is not further on.
            if slot.fp == Fingerprint::EMPTY || self.distance(at, slot.fp) < probed {
                return None;
            }
            at = (at + 1) & mask;
            probed += 1;
        }
    }

    /// The state in slot `at`.
    #[inline]
    pub(crate) fn state(&self, at: usize) -> P {
        self.slots[at].state
    }

    /// Replaces the state in slot `at`.
    #[inline]
    pub(crate) fn set_state(&mut self, at: usize, state: P) {
        self.slots[at].state = state;
    }

    /// The state in slot `at` if it holds an entry.
    #[inline]
    pub(crate) fn occupied(&self, at: usize) -> Option<P> {
        let slot = &self.slots[at];
        (slot.fp != Fingerprint::EMPTY).then_some(slot.state)
    }

    /// Inserts `fp`, which must not be present, growing first if the table
    /// would pass 7/8 full. Returns whether entries moved in a way a
    /// sweeper walking the slots in order could miss: the table was
    /// rebuilt, or an entry was pushed past the end back to the start.
    pub(crate) fn insert_new(&mut self, fp: Fingerprint, state: P) -> bool {
        let mut reordered = false;
        if (self.len + 1) * 8 > self.slots.len() * 7 {
            self.resize(self.slots.len() * 2);
            reordered = true;
        }
        reordered |= self.place(Slot { fp, state });
        self.len += 1;
        reordered
    }

    /// Puts an entry in its Robin Hood place, shifting richer entries on;
    /// returns whether a shifted entry wrapped from the end to the start.
    fn place(&mut self, mut carry: Slot<P>) -> bool {
        let mask = self.mask();
        let mut at = carry.fp.home() & mask;
        let mut probed = 0;
        let mut wrapped = false;
        loop {
            let slot = &mut self.slots[at];
            if slot.fp == Fingerprint::EMPTY {
                *slot = carry;
                return wrapped;
            }
            let theirs = at.wrapping_sub(slot.fp.home()) & mask;
            if theirs < probed {
                std::mem::swap(slot, &mut carry);
                probed = theirs;
            }
            at = (at + 1) & mask;
            wrapped |= at == 0;
            probed += 1;
        }
    }

    /// Removes the entry in slot `at`, shifting the entries after it back
    /// towards their homes. The slot then holds the next entry, if any.
    pub(crate) fn remove_at(&mut self, mut at: usize) {
        let mask = self.mask();
        loop {
            let next = (at + 1) & mask;
            let moved = self.slots[next];
            if moved.fp == Fingerprint::EMPTY || self.distance(next, moved.fp) == 0 {
                self.slots[at].fp = Fingerprint::EMPTY;
                break;
            }
            self.slots[at] = moved;
            at = next;
        }
        self.len -= 1;
    }

    /// Keeps the entries `keep` accepts.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(P) -> bool) {
        let mut at = 0;
        // Removal shifts the next entry into `at`, so only advance past
        // kept or empty slots. Entries that wrap around from the start to
        // the end are seen again at the end, which is harmless.
        while at < self.slots.len() {
            match self.occupied(at) {
                Some(state) if !keep(state) => self.remove_at(at),
                _ => at += 1,
            }
        }
    }

    /// Entries stored.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Slots allocated.
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Bytes allocated.
    pub(crate) fn allocation_size(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }

    /// Gives memory back when under 1/8 full, down to twice the entries
    /// (so it cannot oscillate with growth at 7/8); returns whether it did.
    pub(crate) fn shrink_if_sparse(&mut self) -> bool {
        let slots = self.slots.len();
        if slots > 8 * MIN_SLOTS && self.len < slots / 8 {
            self.resize(roomy_slots(self.len));
            true
        } else {
            false
        }
    }

    fn resize(&mut self, count: usize) {
        let old = std::mem::replace(self, Self::with_slots(count));
        for slot in old.slots.iter().filter(|s| s.fp != Fingerprint::EMPTY) {
            let _ = self.place(*slot);
        }
        self.len = old.len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::Keyer;

    #[test]
    fn slots_hold_the_core_states_with_no_padding_of_their_own() {
        use ratelimit_core::{FixedWindowState, SlidingWindowState, TokenBucketState};
        // The bytes per key the README states: a 16-byte fingerprint and
        // the core's state, as it is.
        assert_eq!(std::mem::size_of::<Slot<TokenBucketState>>(), 24);
        assert_eq!(std::mem::size_of::<Slot<FixedWindowState>>(), 32);
        assert_eq!(std::mem::size_of::<Slot<SlidingWindowState>>(), 32);
    }

    #[test]
    fn inserts_finds_and_removes_like_a_map() {
        let keyer = Keyer::new();
        let mut slots = Slots::<u64>::default();
        let mut model = std::collections::HashMap::new();
        let fp = |i: u64| keyer.fingerprint(&i.to_le_bytes());
        // Mixed inserts and removals through growth and shrinking.
        for round in 0..4u64 {
            for i in 0..5_000u64 {
                let key = (i * 7 + round) % 6_000;
                match slots.find(fp(key)) {
                    Some(at) if i % 3 == 0 => {
                        slots.remove_at(at);
                        model.remove(&key);
                    }
                    Some(at) => slots.set_state(at, key + round),
                    None => {
                        slots.insert_new(fp(key), key + round);
                        model.insert(key, ());
                    }
                }
            }
            assert_eq!(slots.len(), model.len());
            for key in 0..6_000u64 {
                assert_eq!(slots.find(fp(key)).is_some(), model.contains_key(&key));
            }
        }
        slots.retain(|state| state % 2 == 0);
        let kept = (0..6_000u64)
            .filter_map(|k| slots.find(fp(k)))
            .map(|at| slots.state(at))
            .collect::<Vec<_>>();
        assert_eq!(kept.len(), slots.len());
        assert!(kept.iter().all(|s| s % 2 == 0));
        slots.retain(|_| false);
        assert_eq!(slots.len(), 0);
        assert!(slots.shrink_if_sparse());
        assert_eq!(slots.slot_count(), MIN_SLOTS);
    }
}
