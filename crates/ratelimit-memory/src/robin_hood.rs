//! An open-addressing array of keys and states.
//!
//! Why not `hashbrown`: its control bytes live apart from the entries, so a
//! lookup in a table larger than the caches misses twice (control group,
//! then entry). Here a key's home slot is known from its hash, and the
//! stored key itself marks the slot, so a lookup misses once (and the next
//! line, fetched by the prefetcher, covers the probe).
//!
//! Linear probing with Robin Hood ordering (an entry never sits further
//! from its home than the entry it displaced), so a lookup of a missing key
//! stops early even at the 7/8 maximum load, and deletion shifts the
//! following entries back instead of leaving tombstones. Homes come from a
//! hash under a secret seed (`hash.rs`), so clusters cannot be aimed at.
//! The hash is not stored: it is recomputed for a stored key (one multiply)
//! only when a probe passes over it.

use crate::fingerprint::{PackedWide, EMPTY_WORD};
use crate::hash::Seed;

/// Fewest slots an array has once it holds an entry (before, it has none).
pub(crate) const MIN_SLOTS: usize = 8;

/// A key as an array stores it.
pub(crate) trait Stored: Copy + Eq {
    /// The key that marks an empty slot; never a real key.
    const EMPTY: Self;
    /// The placement hash of the key.
    fn hash(self, seed: Seed) -> u64;
}

impl Stored for u64 {
    const EMPTY: Self = EMPTY_WORD;
    #[inline]
    fn hash(self, seed: Seed) -> u64 {
        seed.word(self)
    }
}

impl Stored for PackedWide {
    const EMPTY: Self = PackedWide::EMPTY;
    #[inline]
    fn hash(self, seed: Seed) -> u64 {
        PackedWide::hash(self, seed)
    }
}

/// One slot: an entry, or empty when `key` is [`Stored::EMPTY`].
///
/// Aligned to 4 bytes, not to its widest field: a slot of an 8-byte key
/// and a 12-byte state (a sliding window's, `packed.rs`) is then 20 bytes,
/// not 24, and one of a three-word key and an 8-byte state too. Its fields
/// are read and written by value (a reference to an 8-byte field could be
/// misaligned); x86 and AArch64 load them at any alignment, and a slot
/// that straddles two cache lines costs at most a second line, which a
/// probe of the next slot would fetch anyway.
#[derive(Debug, Clone, Copy)]
#[repr(C, packed(4))]
struct Slot<K, P> {
    key: K,
    state: P,
}

impl<K: Copy, P: Copy> Slot<K, P> {
    /// The stored key, by value.
    #[inline]
    fn key(&self) -> K {
        self.key
    }
}

/// Entries keyed by `K`.
///
/// The placement seed is not kept here but passed in by the owner, which
/// holds one for both of its arrays: a shard's hot fields then share one
/// pair of cache lines with its lock.
pub(crate) struct RobinHood<K, P> {
    slots: Box<[Slot<K, P>]>,
    len: usize,
}

// By hand: the slots' fields can be printed only through copies, and a
// table's millions of slots would not help anyone reading it.
impl<K, P> std::fmt::Debug for RobinHood<K, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RobinHood")
            .field("len", &self.len)
            .field("slots", &self.slots.len())
            .finish()
    }
}

/// The slot count that holds `len` entries at no more than half the
/// maximum load.
fn roomy_slots(len: usize) -> usize {
    (len.saturating_mul(2).saturating_mul(8) / 7 + 1)
        .next_power_of_two()
        .max(MIN_SLOTS)
}

impl<K: Stored, P: Copy + Default> RobinHood<K, P> {
    /// An array of no slots, which allocates nothing until its first
    /// insert: a limiter has hundreds of shards, most of them empty while
    /// it holds few keys.
    pub(crate) fn empty() -> Self {
        Self {
            slots: Box::new([]),
            len: 0,
        }
    }

    /// An empty array of `count` slots (a power of two).
    pub(crate) fn with_slots(count: usize) -> Self {
        debug_assert!(count.is_power_of_two());
        let empty = Slot {
            key: K::EMPTY,
            state: P::default(),
        };
        Self {
            slots: vec![empty; count].into_boxed_slice(),
            len: 0,
        }
    }

    /// `slots - 1`; all ones for an array of no slots, where a
    /// [`probe`](Self::probe) ends at once.
    #[inline]
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Where a key with placement hash `hash` starts its probe.
    #[inline]
    fn home(&self, hash: u64) -> usize {
        // Truncating is intended: only the low bits under the mask matter.
        hash as usize & self.mask()
    }

    /// How far slot `at` is from the home of `key`, stored there.
    #[inline]
    fn distance(&self, at: usize, key: K, seed: Seed) -> usize {
        at.wrapping_sub(self.home(key.hash(seed))) & self.mask()
    }

    /// The slot holding `key`, whose placement hash is `hash`, if any.
    #[cfg(test)]
    pub(crate) fn find(&self, key: K, hash: u64, seed: Seed) -> Option<usize> {
        self.probe(key, hash, seed).ok()
    }

    /// The slot holding `key`, whose placement hash is `hash`, or, when it
    /// is not stored, the slot where it would go: its Robin Hood place,
    /// for [`insert_vacant`](Self::insert_vacant).
    #[inline(always)]
    pub(crate) fn probe(&self, key: K, hash: u64, seed: Seed) -> Result<usize, usize> {
        let mask = self.mask();
        let mut at = self.home(hash);
        let mut probed = 0;
        loop {
            // Out of range only in an array of no slots: nothing stored. In
            // any other, the same bounds check as indexing.
            let Some(slot) = self.slots.get(at) else {
                return Err(at);
            };
            let stored = slot.key();
            if stored == key {
                return Ok(at);
            }
            // An empty slot, or an entry closer to its home than `key`
            // would be here: Robin Hood order says `key` is not further on,
            // and that this is its place.
            if stored == K::EMPTY || self.distance(at, stored, seed) < probed {
                return Err(at);
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
        let slot = self.slots[at];
        (slot.key() != K::EMPTY).then_some(slot.state)
    }

    /// Inserts `key`, which must not be present: [`probe`](Self::probe),
    /// then [`insert_vacant`](Self::insert_vacant).
    #[cfg(test)]
    pub(crate) fn insert_new(&mut self, key: K, state: P, seed: Seed) -> bool {
        let at = self
            .probe(key, key.hash(seed), seed)
            .expect_err("a new key");
        self.insert_vacant(at, key, state, seed)
    }

    /// Inserts `key`, which [`probe`](Self::probe) did not find, `at`
    /// being the place it gave, nothing changed since; grows first if the
    /// array would pass 7/8 full. Returns whether entries moved in a way a
    /// sweeper walking the slots in order could miss: the array was
    /// rebuilt, or an entry was pushed past the end back to the start.
    pub(crate) fn insert_vacant(&mut self, at: usize, key: K, state: P, seed: Seed) -> bool {
        let reordered = if (self.len + 1) * 8 > self.slots.len() * 7 {
            self.resize((self.slots.len() * 2).max(MIN_SLOTS), seed);
            // Slots moved: the place is found again.
            self.place(Slot { key, state }, seed);
            true
        } else {
            self.insert_at(at, Slot { key, state })
        };
        self.len += 1;
        reordered
    }

    /// Puts an entry in its Robin Hood place, shifting richer entries on;
    /// returns whether a shifted entry wrapped from the end to the start.
    fn place(&mut self, carry: Slot<K, P>, seed: Seed) -> bool {
        let at = self
            .probe(carry.key(), carry.key().hash(seed), seed)
            .expect_err("a key not stored");
        self.insert_at(at, carry)
    }

    /// Puts `carry` in slot `at`, its Robin Hood place, moving the entries
    /// from there to the next empty slot one slot on. Entries are in the
    /// order of their homes (Robin Hood order keeps them so), so moving a
    /// run of them on by one keeps that order: no distance need be
    /// computed. Returns whether an entry wrapped from the end to the
    /// start.
    fn insert_at(&mut self, at: usize, carry: Slot<K, P>) -> bool {
        let mask = self.mask();
        let mut empty = at;
        while self.slots[empty].key() != K::EMPTY {
            empty = (empty + 1) & mask;
        }
        let wrapped = empty < at;
        if wrapped {
            // The run wraps: its part at the start moves on first, then the
            // last slot's entry to the first slot, then the part at the end.
            self.slots.copy_within(0..empty, 1);
            self.slots[0] = self.slots[mask];
            self.slots.copy_within(at..mask, at + 1);
        } else {
            self.slots.copy_within(at..empty, at + 1);
        }
        self.slots[at] = carry;
        wrapped
    }

    /// Removes the entry in slot `at`, shifting the entries after it back
    /// towards their homes. The slot then holds the next entry, if any.
    pub(crate) fn remove_at(&mut self, mut at: usize, seed: Seed) {
        let mask = self.mask();
        loop {
            let next = (at + 1) & mask;
            let moved = self.slots[next];
            if moved.key() == K::EMPTY || self.distance(next, moved.key(), seed) == 0 {
                self.slots[at].key = K::EMPTY;
                break;
            }
            self.slots[at] = moved;
            at = next;
        }
        self.len -= 1;
    }

    /// Keeps the entries `keep` accepts.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(P) -> bool, seed: Seed) {
        let mut at = 0;
        // Removal shifts the next entry into `at`, so only advance past
        // kept or empty slots. Entries that wrap around from the start to
        // the end are seen again at the end, which is harmless.
        while at < self.slots.len() {
            match self.occupied(at) {
                Some(state) if !keep(state) => self.remove_at(at, seed),
                _ => at += 1,
            }
        }
    }

    /// Replaces every stored state `s` by `f(s)`, each once.
    pub(crate) fn map_states(&mut self, mut f: impl FnMut(P) -> P) {
        for slot in self.slots.iter_mut().filter(|s| s.key() != K::EMPTY) {
            slot.state = f(slot.state);
        }
    }

    /// Entries stored.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Slots allocated.
    #[inline]
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Bytes allocated.
    pub(crate) fn allocation_size(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }

    /// Gives memory back when under 1/8 full, down to twice the entries
    /// (so it cannot oscillate with growth at 7/8); returns whether it did.
    pub(crate) fn shrink_if_sparse(&mut self, seed: Seed) -> bool {
        let slots = self.slots.len();
        if slots > 8 * MIN_SLOTS && self.len < slots / 8 {
            self.resize(roomy_slots(self.len), seed);
            true
        } else {
            false
        }
    }

    fn resize(&mut self, count: usize, seed: Seed) {
        let old = std::mem::replace(self, Self::with_slots(count));
        for slot in old.slots.iter().filter(|s| s.key() != K::EMPTY) {
            let _ = self.place(*slot, seed);
        }
        self.len = old.len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_key_and_the_stored_state_in_32_bit_words() {
        use crate::packed::{PackedFixed, PackedNarrow, PackedSliding};
        use ratelimit_core::TokenBucketState;
        // The bytes per key the README states: the stored key (two 32-bit
        // words for 8-byte keys, three otherwise) and the stored state.
        assert_eq!(std::mem::size_of::<Slot<u64, TokenBucketState>>(), 16);
        assert_eq!(std::mem::size_of::<Slot<u64, PackedFixed>>(), 16);
        assert_eq!(std::mem::size_of::<Slot<u64, PackedSliding>>(), 20);
        assert_eq!(std::mem::size_of::<Slot<u64, PackedNarrow>>(), 16);
        assert_eq!(
            std::mem::size_of::<Slot<PackedWide, TokenBucketState>>(),
            20
        );
        assert_eq!(std::mem::size_of::<Slot<PackedWide, PackedFixed>>(), 20);
        assert_eq!(std::mem::size_of::<Slot<PackedWide, PackedSliding>>(), 24);
        assert_eq!(std::mem::size_of::<Slot<PackedWide, PackedNarrow>>(), 20);
    }

    #[test]
    fn an_empty_array_allocates_nothing_until_its_first_insert() {
        let seed = Seed::process();
        let mut slots = RobinHood::<u64, u64>::empty();
        assert_eq!((slots.slot_count(), slots.allocation_size()), (0, 0));
        for key in [1, 2, u64::MAX - 1] {
            assert_eq!(slots.find(key, seed.word(key), seed), None);
        }
        slots.retain(|_| true, seed);
        slots.map_states(|s| s + 1);
        assert!(!slots.shrink_if_sparse(seed));
        slots.insert_new(7, 70, seed);
        assert_eq!(slots.slot_count(), MIN_SLOTS);
        let at = slots.find(7, seed.word(7), seed).expect("inserted");
        assert_eq!(slots.state(at), 70);
    }

    #[test]
    fn an_insert_moves_the_run_after_its_place_on_and_says_when_it_wraps() {
        let seed = Seed::process();
        let mut slots = RobinHood::<u64, u64>::with_slots(MIN_SLOTS);
        // Two keys (from 1: 0 marks an empty slot) whose home is `home`.
        let homed = |home: usize| {
            (1..)
                .filter(|&k| slots.home(seed.word(k)) == home)
                .take(2)
                .collect::<Vec<u64>>()
        };
        let (sevens, sixes) = (homed(7), homed(6));
        let (a, b, c, d) = (sevens[0], sevens[1], sixes[0], sixes[1]);
        let insert = |slots: &mut RobinHood<u64, u64>, key: u64| {
            let at = slots.probe(key, seed.word(key), seed).expect_err("new");
            (at, slots.insert_vacant(at, key, key * 10, seed))
        };
        // A in its home, B after it past the end: nothing moves, nothing
        // wraps (B is the one inserted).
        assert_eq!(insert(&mut slots, a), (7, false));
        assert_eq!(insert(&mut slots, b), (0, false));
        assert_eq!(insert(&mut slots, c), (6, false));
        // D's place is slot 7, before A: A moves to slot 0 and B to slot 1.
        // A went from the end to the start.
        assert_eq!(insert(&mut slots, d), (7, true));
        let at = |slots: &RobinHood<u64, u64>, key: u64| slots.find(key, seed.word(key), seed);
        for (key, slot) in [(c, 6), (d, 7), (a, 0), (b, 1)] {
            assert_eq!(at(&slots, key), Some(slot), "key {key}");
            assert_eq!(slots.state(slot), key * 10);
        }
        assert_eq!(slots.len(), 4);
    }

    #[test]
    fn inserts_finds_and_removes_like_a_map() {
        let seed = Seed::process();
        let mut slots = RobinHood::<u64, u64>::with_slots(MIN_SLOTS);
        let mut model = std::collections::HashMap::new();
        // Keys from 1: 0 is the empty marker.
        let find =
            |slots: &RobinHood<u64, u64>, key: u64| slots.find(key + 1, seed.word(key + 1), seed);
        // Mixed inserts and removals through growth and shrinking.
        for round in 0..4u64 {
            for i in 0..5_000u64 {
                let key = (i * 7 + round) % 6_000;
                match find(&slots, key) {
                    Some(at) if i % 3 == 0 => {
                        slots.remove_at(at, seed);
                        model.remove(&key);
                    }
                    Some(at) => slots.set_state(at, key + round),
                    None => {
                        slots.insert_new(key + 1, key + round, seed);
                        model.insert(key, ());
                    }
                }
            }
            assert_eq!(slots.len(), model.len());
            for key in 0..6_000u64 {
                assert_eq!(find(&slots, key).is_some(), model.contains_key(&key));
            }
        }
        slots.retain(|state| state % 2 == 0, seed);
        let kept = (0..6_000u64)
            .filter_map(|k| find(&slots, k))
            .map(|at| slots.state(at))
            .collect::<Vec<_>>();
        assert_eq!(kept.len(), slots.len());
        assert!(kept.iter().all(|s| s % 2 == 0));
        slots.retain(|_| false, seed);
        assert_eq!(slots.len(), 0);
        assert!(slots.shrink_if_sparse(seed));
        assert_eq!(slots.slot_count(), MIN_SLOTS);
    }
}
