//! A shard's entries: one array for 8-byte keys, one for all others.
//!
//! Two arrays because an 8-byte key (a `u64` id, the commonest key a
//! program builds) fits one word: its token-bucket entry is then 16 bytes
//! instead of 20, fewer than a `HashMap<u64, AtomicU64>` spends with its
//! control byte. Slot numbers run over the one-word array first, then the
//! three-word array, so the shard's sweeper walks both as one.

use crate::fingerprint::{Fingerprint, Key, PackedWide};
use crate::hash::Seed;
use crate::robin_hood::RobinHood;

/// Entries keyed by [`Fingerprint`].
#[derive(Debug)]
pub(crate) struct Slots<P> {
    words: RobinHood<u64, P>,
    wides: RobinHood<PackedWide, P>,
    seed: Seed,
}

impl<P: Copy + Default> Default for Slots<P> {
    fn default() -> Self {
        Self {
            words: RobinHood::empty(),
            wides: RobinHood::empty(),
            seed: Seed::process(),
        }
    }
}

/// Where a key [`Slots::probe`] did not find would go: a slot of the array
/// of its width, valid until the slots next change.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vacant(usize);

/// Slot `at` of the whole, as a slot of one of the two arrays.
enum Place {
    Word(usize),
    Wide(usize),
}

impl<P: Copy + Default> Slots<P> {
    #[inline]
    fn place(&self, at: usize) -> Place {
        match at.checked_sub(self.words.slot_count()) {
            None => Place::Word(at),
            Some(wide) => Place::Wide(wide),
        }
    }

    /// The slot holding `fp`, or, when it is not stored, its place in its
    /// array, for [`insert_vacant`](Self::insert_vacant). Always inlined:
    /// it is the hot path's lookup, and a call (which `#[inline]` left
    /// it) cost a stored key's check 3-5%.
    #[inline(always)]
    pub(crate) fn probe(&self, fp: Fingerprint) -> Result<usize, Vacant> {
        match fp.key {
            Key::Word(word) => match self.words.probe(word, fp.hash, self.seed) {
                Ok(at) => Ok(at),
                Err(at) => Err(Vacant(at)),
            },
            Key::Wide(wide) => match self.wides.probe(wide.packed(), fp.hash, self.seed) {
                Ok(at) => Ok(at + self.words.slot_count()),
                Err(at) => Err(Vacant(at)),
            },
        }
    }

    /// The slot holding `fp`, if any.
    #[inline]
    pub(crate) fn find(&self, fp: Fingerprint) -> Option<usize> {
        self.probe(fp).ok()
    }

    /// The state in slot `at`.
    #[inline]
    pub(crate) fn state(&self, at: usize) -> P {
        match self.place(at) {
            Place::Word(at) => self.words.state(at),
            Place::Wide(at) => self.wides.state(at),
        }
    }

    /// Replaces the state in slot `at`.
    #[inline]
    pub(crate) fn set_state(&mut self, at: usize, state: P) {
        match self.place(at) {
            Place::Word(at) => self.words.set_state(at, state),
            Place::Wide(at) => self.wides.set_state(at, state),
        }
    }

    /// The state in slot `at` if it holds an entry.
    #[inline]
    pub(crate) fn occupied(&self, at: usize) -> Option<P> {
        match self.place(at) {
            Place::Word(at) => self.words.occupied(at),
            Place::Wide(at) => self.wides.occupied(at),
        }
    }

    /// Inserts `fp`, which must not be present: [`probe`](Self::probe),
    /// then [`insert_vacant`](Self::insert_vacant).
    #[cfg(test)]
    pub(crate) fn insert_new(&mut self, fp: Fingerprint, state: P) -> bool {
        let vacant = self.probe(fp).expect_err("a new key");
        self.insert_vacant(vacant, fp, state)
    }

    /// Inserts `fp`, which [`probe`](Self::probe) did not find, `vacant`
    /// being what it gave, nothing changed since; grows its array first if
    /// it would pass 7/8 full. Returns whether entries moved in a way a
    /// sweeper walking the slots in order could miss: an array was rebuilt
    /// (which also renumbers the slots after it), or an entry was pushed
    /// past the end of its array back to the start.
    pub(crate) fn insert_vacant(&mut self, vacant: Vacant, fp: Fingerprint, state: P) -> bool {
        match fp.key {
            Key::Word(word) => self.words.insert_vacant(vacant.0, word, state, self.seed),
            Key::Wide(wide) => self
                .wides
                .insert_vacant(vacant.0, wide.packed(), state, self.seed),
        }
    }

    /// Removes the entry in slot `at`, shifting the entries after it in its
    /// array back towards their homes. The slot then holds the next entry,
    /// if any.
    pub(crate) fn remove_at(&mut self, at: usize) {
        match self.place(at) {
            Place::Word(at) => self.words.remove_at(at, self.seed),
            Place::Wide(at) => self.wides.remove_at(at, self.seed),
        }
    }

    /// Keeps the entries `keep` accepts.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(P) -> bool) {
        self.words.retain(&mut keep, self.seed);
        self.wides.retain(keep, self.seed);
    }

    /// Replaces every stored state `s` by `f(s)`, each once.
    pub(crate) fn map_states(&mut self, mut f: impl FnMut(P) -> P) {
        self.words.map_states(&mut f);
        self.wides.map_states(f);
    }

    /// Entries stored.
    pub(crate) fn len(&self) -> usize {
        self.words.len() + self.wides.len()
    }

    /// Slots allocated.
    pub(crate) fn slot_count(&self) -> usize {
        self.words.slot_count() + self.wides.slot_count()
    }

    /// Bytes allocated.
    pub(crate) fn allocation_size(&self) -> usize {
        self.words.allocation_size() + self.wides.allocation_size()
    }

    /// Gives memory back from an array under 1/8 full; returns whether
    /// either did.
    pub(crate) fn shrink_if_sparse(&mut self) -> bool {
        // Both, not `||`: each array shrinks on its own terms.
        let words = self.words.shrink_if_sparse(self.seed);
        self.wides.shrink_if_sparse(self.seed) | words
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::Keyer;
    use crate::robin_hood::MIN_SLOTS;

    #[test]
    fn a_shard_fits_the_cache_lines_of_its_lock() {
        use ratelimit_core::SlidingWindow;
        // The lock, both arrays, the seed and the sweeper's fields: one
        // 128-byte pair of lines (the padding `table.rs` gives a shard).
        let size =
            std::mem::size_of::<crate::lock::ShardLock<crate::shard::Shard<SlidingWindow>>>();
        assert!(size <= 128, "{size} bytes");
    }

    #[test]
    fn both_arrays_are_one_run_of_slots() {
        let keyer = Keyer::new();
        let mut slots = Slots::<u64>::default();
        // 8-byte keys go to the word array, 4-byte and 20-byte keys to the
        // wide one; states tell them apart.
        let keys: Vec<Vec<u8>> = (1..=300u64)
            .map(|i| match i % 3 {
                0 => i.to_le_bytes().to_vec(),
                1 => (i as u32).to_le_bytes().to_vec(),
                _ => format!("key-{i:016}").into_bytes(),
            })
            .collect();
        for (i, key) in keys.iter().enumerate() {
            let fp = keyer.fingerprint(key);
            assert_eq!(slots.find(fp), None);
            slots.insert_new(fp, i as u64);
        }
        assert_eq!(slots.len(), keys.len());
        for (i, key) in keys.iter().enumerate() {
            let at = slots.find(keyer.fingerprint(key)).expect("inserted");
            assert_eq!(slots.state(at), i as u64);
            slots.set_state(at, i as u64 * 2);
        }
        // Walking slot numbers sees every entry once.
        let mut seen: Vec<u64> = (0..slots.slot_count())
            .filter_map(|at| slots.occupied(at))
            .collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..keys.len() as u64).map(|i| i * 2).collect::<Vec<_>>()
        );
        // Removing by slot number, in both arrays.
        for key in keys.iter().step_by(2) {
            let at = slots.find(keyer.fingerprint(key)).expect("still there");
            slots.remove_at(at);
        }
        assert_eq!(slots.len(), keys.len() / 2);
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(slots.find(keyer.fingerprint(key)).is_some(), i % 2 == 1);
        }
        slots.retain(|_| false);
        assert_eq!(slots.len(), 0);
        assert!(slots.shrink_if_sparse());
        assert_eq!(slots.slot_count(), 2 * MIN_SLOTS);
    }
}
