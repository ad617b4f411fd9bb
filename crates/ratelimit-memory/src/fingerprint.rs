//! Keys stored as keyed 128-bit fingerprints.
//!
//! The table never stores key bytes: each key is replaced by a 128-bit
//! SipHash-1-3 of its bytes under a secret 128-bit seed drawn when the
//! limiter is built. So a key of 64 KiB costs what a key of 8 bytes costs,
//! an entry needs no heap allocation of its own, and a client cannot pick
//! keys that collide, because it does not know the seed.
//!
//! Two distinct keys share a fingerprint with probability about `2^-128`
//! per pair; with `n` keys stored at once the chance that any two collide
//! is below `n^2 / 2^129` (under `10^-20` for a billion keys). A collision
//! would make two keys share one counter — stricter limiting for both,
//! never a crash or an over-admission for either alone.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use crate::siphash::sip13_128;

/// The 128-bit fingerprint of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    /// Low half: the hash the shard's table probes with.
    lo: u64,
    /// High half: picks the shard, so shard and slot use independent bits.
    hi: u64,
}

impl Fingerprint {
    /// Marks an empty table slot. A key whose SipHash is zero is given
    /// another fingerprint (see [`Keyer::fingerprint`]).
    pub(crate) const EMPTY: Self = Self { lo: 0, hi: 0 };

    /// Where the key's probe starts in a table (before masking).
    #[inline]
    pub(crate) const fn home(self) -> usize {
        // Truncating is intended: only the low bits under the mask matter.
        self.lo as usize
    }

    /// The shard index under `mask` (a power of two minus one).
    #[inline]
    pub(crate) const fn shard(self, mask: usize) -> usize {
        // Truncating is intended: only the low bits under the mask matter.
        (self.hi as usize) & mask
    }

    /// A fingerprint with chosen halves, so that tests can place keys in a
    /// shard's table (crowd one home, wrap past the end). Not all zero.
    #[cfg(test)]
    pub(crate) const fn from_parts(lo: u64, hi: u64) -> Self {
        assert!(lo != 0 || hi != 0, "all zero marks an empty slot");
        Self { lo, hi }
    }
}

/// Computes fingerprints under one secret seed.
#[derive(Clone, Copy)]
pub(crate) struct Keyer {
    k0: u64,
    k1: u64,
}

impl Keyer {
    /// A keyer with a fresh secret seed.
    ///
    /// The seed is two outputs of the standard library's `RandomState`
    /// hasher, whose own keys come from the operating system's random source
    /// once per thread: unpredictable to clients, and no extra dependency.
    pub(crate) fn new() -> Self {
        let random = RandomState::new();
        Self {
            k0: random.hash_one(0x6b65_7930_u64),
            k1: random.hash_one(0x6b65_7931_u64),
        }
    }

    /// The fingerprint of `key`.
    #[inline]
    pub(crate) fn fingerprint(&self, key: &[u8]) -> Fingerprint {
        // SipHash folds the message length into its last block, so `b"a"`
        // and `b"a\0"` differ without a length prefix.
        let (lo, hi) = sip13_128(self.k0, self.k1, key);
        // All-zero marks an empty slot; a key hashing to it (chance 2^-128)
        // shares a fingerprint with the keys hashing to (0, 1) instead.
        Fingerprint {
            lo,
            hi: hi | u64::from(lo == 0 && hi == 0),
        }
    }
}

impl std::fmt::Debug for Keyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seed is a secret: never print it.
        f.write_str("Keyer { .. }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_keys_have_distinct_fingerprints() {
        let keyer = Keyer::new();
        let keys: [&[u8]; 5] = [b"", b"\0", b"\0\0", b"a", b"a\0"];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(keyer.fingerprint(a), keyer.fingerprint(b));
            }
            assert_eq!(keyer.fingerprint(a), keyer.fingerprint(a));
        }
    }

    #[test]
    fn seeds_differ_between_keyers() {
        assert_ne!(
            Keyer::new().fingerprint(b"k"),
            Keyer::new().fingerprint(b"k")
        );
    }
}
