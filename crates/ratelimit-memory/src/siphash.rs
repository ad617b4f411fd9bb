//! SipHash-1-3 with 128-bit output, over a whole byte slice at once.
//!
//! The `siphasher` crate computes the same function through the streaming
//! `Hasher` interface, which buffers input byte by byte; for the short keys
//! of a rate limiter that doubled the cost of a check. Here the message is
//! known in full, so it is read eight bytes at a time and its tail once.
//! The tests compare both on many lengths.

/// The SipHash state: four 64-bit words.
struct State {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
}

impl State {
    #[inline(always)]
    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13) ^ self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16) ^ self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21) ^ self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17) ^ self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    /// One compression round per message word (the "1" of SipHash-1-3).
    #[inline(always)]
    fn absorb(&mut self, m: u64) {
        self.v3 ^= m;
        self.round();
        self.v0 ^= m;
    }

    #[inline(always)]
    fn fold(&self) -> u64 {
        self.v0 ^ self.v1 ^ self.v2 ^ self.v3
    }
}

/// SipHash-1-3 of `message` under the key `(k0, k1)`, 128-bit output as
/// `(low, high)` words.
#[inline]
pub(crate) fn sip13_128(k0: u64, k1: u64, message: &[u8]) -> (u64, u64) {
    let mut s = State {
        v0: k0 ^ 0x736f_6d65_7073_6575,
        // The 128-bit variant marks v1.
        v1: k1 ^ 0x646f_7261_6e64_6f6d ^ 0xee,
        v2: k0 ^ 0x6c79_6765_6e65_7261,
        v3: k1 ^ 0x7465_6462_7974_6573,
    };
    let mut words = message.chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        s.absorb(u64::from_le_bytes(bytes));
    }
    // The last word: the remaining bytes, and the length's low byte on top.
    let tail = words.remainder();
    let mut bytes = [0u8; 8];
    bytes[..tail.len()].copy_from_slice(tail);
    // Truncating the length is part of SipHash's definition.
    bytes[7] = message.len() as u8;
    s.absorb(u64::from_le_bytes(bytes));

    s.v2 ^= 0xee;
    for _ in 0..3 {
        s.round();
    }
    let low = s.fold();
    s.v1 ^= 0xdd;
    for _ in 0..3 {
        s.round();
    }
    (low, s.fold())
}

#[cfg(test)]
mod tests {
    use std::hash::Hasher;

    use siphasher::sip128::{Hasher128, SipHasher13};

    use super::sip13_128;

    #[test]
    fn agrees_with_the_siphasher_crate_on_every_length() {
        let message: Vec<u8> = (0..200u32).map(|i| (i * 37 + 11) as u8).collect();
        for (k0, k1) in [(0, 0), (1, 2), (u64::MAX, 0x0123_4567_89ab_cdef)] {
            for len in 0..message.len() {
                let mut reference = SipHasher13::new_with_keys(k0, k1);
                reference.write(&message[..len]);
                let h = reference.finish128();
                assert_eq!(
                    sip13_128(k0, k1, &message[..len]),
                    (h.h1, h.h2),
                    "length {len}"
                );
            }
        }
    }
}
