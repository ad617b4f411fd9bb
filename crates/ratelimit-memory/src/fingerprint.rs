//! What the table stores for a key: the key itself when it is short, a
//! keyed 95-bit fingerprint when it is long.
//!
//! - A key of exactly 8 bytes (a `u64`, an IPv4 address and port…) is one
//!   word, stored in a table of one-word keys: 16 bytes per token-bucket
//!   entry.
//! - Any other key of at most 11 bytes is three 32-bit words: its bytes,
//!   and its length (plus one) in the last byte. Compared exactly.
//! - A longer key is replaced by 95 bits of a 128-bit SipHash-1-3 of its
//!   bytes under a secret seed drawn when the limiter is built, in the same
//!   three words, the top bit of the last set so that it never equals a
//!   short key (whose last byte is at most 12) nor the empty slot. So a key
//!   of 64 KiB costs what a key of 12 bytes costs, an entry needs no heap
//!   allocation of its own, and a client cannot pick long keys that
//!   collide, because it does not know the seed. Two long keys share a
//!   fingerprint with probability `2^-95` per pair: with `n` long keys
//!   stored at once the chance that any two collide is below `n^2 / 2^96`
//!   (about `1.3 * 10^-17` for a million keys, `1.3 * 10^-11` for a
//!   billion). A collision would make two keys share one counter —
//!   stricter limiting for both, never a crash or an over-admission for
//!   either alone.
//!
//! Why 12 bytes and not 16: with a token bucket's 8-byte state a slot is
//! then 20 bytes instead of 24, a sixth less memory for every key that is
//! not a `u64` (the slots are arrays of 32-bit words, `robin_hood.rs`).
//!
//! Where a key goes (shard and slot) is decided by a fast hash under a
//! per-process random seed, `hash.rs`.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use crate::hash::Seed;
use crate::siphash::sip13_128;

/// A key of three 32-bit words: a short key's bytes and length, or a long
/// key's fingerprint. Never all-zero, which marks an empty slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wide {
    lo: u64,
    hi: u32,
}

impl Wide {
    /// The placement hash.
    #[inline]
    pub(crate) fn hash(self, seed: Seed) -> u64 {
        seed.wide(self.lo, u64::from(self.hi))
    }

    /// The key as a slot stores it.
    #[inline]
    pub(crate) const fn packed(self) -> PackedWide {
        PackedWide {
            lo: self.lo,
            hi: self.hi,
        }
    }
}

/// A [`Wide`] key as a slot stores it: 12 bytes aligned to 4, so that a
/// slot of it and an 8-byte state is 20 bytes (`robin_hood.rs`). Only
/// slots hold this form: a misaligned word in a value the check passes
/// around (a [`Fingerprint`]) made the compiler store it in halves and
/// load it whole, which stalls the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(4))]
pub(crate) struct PackedWide {
    lo: u64,
    hi: u32,
}

impl PackedWide {
    /// Marks an empty slot of a three-word table.
    pub(crate) const EMPTY: Self = Self { lo: 0, hi: 0 };

    /// The placement hash, as [`Wide::hash`].
    #[inline]
    pub(crate) fn hash(self, seed: Seed) -> u64 {
        seed.wide(self.lo, u64::from(self.hi))
    }
}

/// The one-word key that marks an empty slot of a one-word table; the
/// 8-byte key of that value (eight zero bytes) is stored as a [`Wide`] key.
pub(crate) const EMPTY_WORD: u64 = 0;

/// A key as the table stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    /// A key of exactly 8 bytes, as a little-endian word.
    Word(u64),
    /// Any other key.
    Wide(Wide),
}

/// A key as stored, and its placement hash, computed once per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub(crate) key: Key,
    pub(crate) hash: u64,
}

impl Fingerprint {
    /// The shard index under `mask` (a power of two minus one): the top
    /// bits of the hash, while a table's slot comes from its bottom bits.
    #[inline]
    pub(crate) const fn shard(self, mask: usize) -> usize {
        // Truncating is intended: only the low bits under the mask matter.
        ((self.hash >> 48) as usize) & mask
    }

    /// A three-word key with chosen parts, so that tests can place keys in
    /// a shard's table (crowd one home, wrap past the end): unit tests run
    /// with the transparent placement seed (`hash.rs`), under which its
    /// home is `lo`. Not all zero.
    #[cfg(test)]
    pub(crate) const fn from_parts(lo: u64, hi: u32) -> Self {
        assert!(lo != 0 || hi != 0, "all zero marks an empty slot");
        Self {
            key: Key::Wide(Wide { lo, hi }),
            hash: lo,
        }
    }
}

/// Keys shorter than this are stored as they are in a [`Wide`] key.
const SHORT: usize = 12;

/// Turns keys into [`Fingerprint`]s under one limiter's secret seeds.
#[derive(Clone, Copy)]
pub(crate) struct Keyer {
    /// The SipHash key for long keys, drawn per limiter.
    k0: u64,
    k1: u64,
    /// The placement seed, the process's.
    seed: Seed,
}

impl Keyer {
    /// A keyer with a fresh secret SipHash key.
    ///
    /// The key is two outputs of the standard library's `RandomState`
    /// hasher, whose own keys come from the operating system's random source
    /// once per thread: unpredictable to clients, and no extra dependency.
    pub(crate) fn new() -> Self {
        let random = RandomState::new();
        Self {
            k0: random.hash_one(0x6b65_7930_u64),
            k1: random.hash_one(0x6b65_7931_u64),
            seed: Seed::process(),
        }
    }

    /// The stored form of `key`, and where it goes.
    #[inline]
    pub(crate) fn fingerprint(&self, key: &[u8]) -> Fingerprint {
        if let Ok(word) = <[u8; 8]>::try_from(key) {
            let word = u64::from_le_bytes(word);
            if word != EMPTY_WORD {
                return Fingerprint {
                    key: Key::Word(word),
                    hash: self.seed.word(word),
                };
            }
        }
        let wide = self.wide(key);
        Fingerprint {
            key: Key::Wide(wide),
            hash: wide.hash(self.seed),
        }
    }

    /// The three-word form of `key`.
    #[inline]
    fn wide(&self, key: &[u8]) -> Wide {
        if key.len() < SHORT {
            let mut bytes = [0u8; 12];
            bytes[..key.len()].copy_from_slice(key);
            // Cannot truncate: the length is below 12. Never zero, so a
            // short key is never all-zero.
            bytes[11] = key.len() as u8 + 1;
            let (lo, hi) = bytes.split_at(8);
            return Wide {
                lo: u64::from_le_bytes(lo.try_into().expect("8 of 12 bytes")),
                hi: u32::from_le_bytes(hi.try_into().expect("4 of 12 bytes")),
            };
        }
        // SipHash folds the message length into its last block, so `b"a"`
        // and `b"a\0"` differ without a length prefix.
        let (lo, hi) = sip13_128(self.k0, self.k1, key);
        // The top bit of the last byte set: never a short key's (whose
        // last byte is its length plus one, at most 12), never all-zero.
        // Truncating is intended: 31 more bits of the hash.
        Wide {
            lo,
            hi: (hi as u32) | 1 << 31,
        }
    }
}

impl std::fmt::Debug for Keyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seeds are secrets: never print them.
        f.write_str("Keyer { .. }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_keys_have_distinct_fingerprints() {
        let keyer = Keyer::new();
        let long = [7u8; 40];
        let keys: [&[u8]; 16] = [
            b"",
            b"\0",
            b"\0\0",
            b"a",
            b"a\0",
            &[0; 8],
            &[0, 0, 0, 0, 0, 0, 0, 1],
            &[1, 0, 0, 0, 0, 0, 0, 0],
            &[0; 11],
            &[0; 12],
            &[0; 15],
            &[0; 16],
            &long[..11],
            &long[..12],
            &long[..39],
            &long,
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(keyer.fingerprint(a), keyer.fingerprint(b), "{a:?} {b:?}");
            }
            assert_eq!(keyer.fingerprint(a), keyer.fingerprint(a));
        }
    }

    #[test]
    fn eight_byte_keys_are_words_except_the_empty_marker() {
        let keyer = Keyer::new();
        let key = |k: &[u8]| keyer.fingerprint(k).key;
        assert_eq!(key(&42u64.to_le_bytes()), Key::Word(42));
        assert!(matches!(key(&[0; 8]), Key::Wide(_)));
        assert!(matches!(key(&[1; 7]), Key::Wide(_)));
        assert!(matches!(key(&[1; 9]), Key::Wide(_)));
        for k in [&b""[..], b"a", &[0; 8], &[0; 11], &[0; 12], &[9; 300]] {
            assert!(matches!(key(k), Key::Wide(w) if w.packed() != PackedWide::EMPTY));
        }
    }

    #[test]
    fn long_keys_are_keyed_per_limiter() {
        let long = [3u8; 16];
        assert_ne!(
            Keyer::new().fingerprint(&long),
            Keyer::new().fingerprint(&long)
        );
    }
}
