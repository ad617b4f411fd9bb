//! Where a key goes: a fast hash under a per-process random seed.
//!
//! Placement (shard and home slot) needs a hash that clients cannot aim.
//! The keyed 128-bit SipHash is such a hash, but it costs more than the
//! rest of a check together for a short key. Short keys are stored as they
//! are and compared exactly (see `fingerprint.rs`), so the placement hash
//! only has to spread them, not to identify them: a folded multiply (the
//! 128-bit product of the key's words with secret seed words, its halves
//! xored), the construction `foldhash` gives `hashbrown` for its hash-flooding
//! resistance. The seed is drawn from the operating system's random source
//! once per process; without it, a client cannot tell which keys share a
//! shard or a probe sequence. And flooding could only lengthen probes,
//! never change a decision: keys are compared in full.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// The secret seed of the placement hash.
#[derive(Clone, Copy)]
pub(crate) struct Seed {
    a: u64,
    b: u64,
    c: u64,
}

impl Seed {
    /// The process's seed, drawn on first use.
    #[cfg(not(test))]
    pub(crate) fn process() -> Self {
        static SEED: std::sync::OnceLock<Seed> = std::sync::OnceLock::new();
        *SEED.get_or_init(Self::random)
    }

    /// In the crate's unit tests, the transparent seed: a one-word key is
    /// its own hash and a three-word key's hash is its first word, so tests
    /// choose where keys go (`Fingerprint::from_parts`). The tests of the
    /// hash itself use random seeds; integration tests, doctests and
    /// users get the random process seed.
    #[cfg(test)]
    pub(crate) fn process() -> Self {
        Self { a: 0, b: 0, c: 0 }
    }

    #[cfg(test)]
    fn is_transparent(self) -> bool {
        self.a == 0 && self.b == 0 && self.c == 0
    }

    /// A fresh seed.
    fn random() -> Self {
        // `RandomState`'s keys come from the OS random source.
        let random = RandomState::new();
        Seed {
            a: random.hash_one(0x0073_6565_6461_u64),
            b: random.hash_one(0x0073_6565_6462_u64),
            c: random.hash_one(0x0073_6565_6463_u64),
        }
    }

    // One folded multiply leaves the low bits of its result depending on
    // few bits of a key that varies only in its low bits (the low half of
    // the product sees only the low bits of the factors, and the high half
    // moves little), so consecutive ids would crowd some homes. A second
    // fold spreads every bit over the whole word.

    /// The hash of a one-word key.
    #[inline]
    pub(crate) fn word(self, key: u64) -> u64 {
        #[cfg(test)]
        if self.is_transparent() {
            return key;
        }
        fold(fold(key ^ self.a, self.b), self.c)
    }

    /// The hash of a three-word key (its last word widened).
    #[inline]
    pub(crate) fn wide(self, lo: u64, hi: u64) -> u64 {
        #[cfg(test)]
        if self.is_transparent() {
            return lo;
        }
        fold(fold(lo ^ self.a, hi ^ self.b), self.c)
    }
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seed is a secret: never print it.
        f.write_str("Seed { .. }")
    }
}

/// The 128-bit product of `x` and `y`, its two halves xored: every output
/// bit depends on every input bit of both.
#[inline]
fn fold(x: u64, y: u64) -> u64 {
    let product = u128::from(x) * u128::from(y);
    // Truncating is intended: the low half, then the high half.
    (product as u64) ^ ((product >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes 4,096 consecutive keys into 1,024 homes and 16 shards under
    /// 50 seeds: no home or shard gets far more than its share (~4 per
    /// home: over 20 in one has odds of about 1e-9 per seed).
    fn spreads(hash: impl Fn(Seed, u64) -> u64) {
        for seed in (0..50).map(|_| Seed::random()) {
            let mut homes = vec![0u32; 1024];
            let mut shards = [0u32; 16];
            for key in 0..4096u64 {
                let h = hash(seed, key);
                homes[(h & 1023) as usize] += 1;
                shards[((h >> 48) & 15) as usize] += 1;
            }
            assert!(homes.iter().all(|&n| n <= 20), "{:?}", homes.iter().max());
            assert!(
                shards.iter().all(|&n| (128..=384).contains(&n)),
                "{shards:?}"
            );
        }
    }

    #[test]
    fn consecutive_ids_spread_over_homes_and_shards() {
        spreads(Seed::word);
    }

    #[test]
    fn short_keys_of_one_length_spread_over_homes_and_shards() {
        // Three-word keys that differ only in their first bytes, as short
        // strings of one length do: the last word is the same for all.
        spreads(|seed, key| seed.wide(key, 5 << 24));
    }
}
