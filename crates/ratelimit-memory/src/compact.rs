//! Each policy's state in the fewest bytes that hold it exactly.
//!
//! Counts never exceed the policy's limit, which is at most `2^32 - 1`
//! (`ratelimit_core::MAX_LIMIT`), so they fit a `u32`. Window indices and
//! token-bucket timestamps need the full `u64`. With the 16-byte
//! fingerprint, a token-bucket entry is 24 bytes and a window entry 32.

use ratelimit_core::{
    Algorithm, FixedWindow, FixedWindowState, SlidingWindow, SlidingWindowState, TokenBucket,
    TokenBucketState,
};

/// An [`Algorithm`] whose state has a compact stored form.
pub(crate) trait Compact: Algorithm {
    /// What one table entry stores beside the fingerprint.
    type Packed: Copy + Default + std::fmt::Debug + Send + Sync + 'static;

    /// The stored form of `state`.
    fn pack(state: &Self::State) -> Self::Packed;

    /// The state a stored form holds.
    fn unpack(packed: Self::Packed) -> Self::State;
}

/// A count known to be at most the policy's limit.
#[inline]
fn count32(count: u64) -> u32 {
    // Cannot fail: states come from the policy's own `check`, whose counts
    // never exceed its limit, and limits are at most 2^32 - 1.
    u32::try_from(count).expect("counts never exceed the limit, which fits 32 bits")
}

impl Compact for TokenBucket {
    type Packed = u64;

    #[inline]
    fn pack(state: &TokenBucketState) -> u64 {
        state.tat
    }

    #[inline]
    fn unpack(packed: u64) -> TokenBucketState {
        TokenBucketState::new(packed)
    }
}

/// A fixed window's index and count.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PackedFixed {
    window: u64,
    count: u32,
}

impl Compact for FixedWindow {
    type Packed = PackedFixed;

    #[inline]
    fn pack(state: &FixedWindowState) -> PackedFixed {
        PackedFixed {
            window: state.window,
            count: count32(state.count),
        }
    }

    #[inline]
    fn unpack(packed: PackedFixed) -> FixedWindowState {
        FixedWindowState::new(packed.window, u64::from(packed.count))
    }
}

/// A sliding window's index and its two counts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PackedSliding {
    window: u64,
    previous: u32,
    current: u32,
}

impl Compact for SlidingWindow {
    type Packed = PackedSliding;

    #[inline]
    fn pack(state: &SlidingWindowState) -> PackedSliding {
        PackedSliding {
            window: state.window,
            previous: count32(state.previous),
            current: count32(state.current),
        }
    }

    #[inline]
    fn unpack(packed: PackedSliding) -> SlidingWindowState {
        SlidingWindowState::new(
            packed.window,
            u64::from(packed.previous),
            u64::from(packed.current),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_the_extremes() {
        let max = u64::from(u32::MAX);
        let f = FixedWindowState::new(u64::MAX, max);
        assert_eq!(FixedWindow::unpack(FixedWindow::pack(&f)), f);
        let s = SlidingWindowState::new(u64::MAX, max, max - 1);
        assert_eq!(SlidingWindow::unpack(SlidingWindow::pack(&s)), s);
        let t = TokenBucketState::new(u64::MAX);
        assert_eq!(TokenBucket::unpack(TokenBucket::pack(&t)), t);
    }

    #[test]
    fn entries_stay_small() {
        assert_eq!(std::mem::size_of::<PackedFixed>(), 16);
        assert_eq!(std::mem::size_of::<PackedSliding>(), 16);
    }
}
