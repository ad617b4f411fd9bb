//! The form in which a shard stores each algorithm's state.
//!
//! The core's window states hold the window index as a `u64` beside
//! `u32` counts: 16 bytes, of which a fixed window uses 12 and a sliding
//! window 16, against a token bucket's 8. Stored as they are, a window
//! entry is half as large again as a bucket entry, and in a table larger
//! than the caches that is more memory to miss in. Here the window index
//! is stored in 32 bits, as an offset from a base window the shard keeps
//! (`Shard::base`): a fixed-window state is then 8 bytes (a slot of 16
//! with an 8-byte key, as the bucket's), a sliding-window state 12 (a slot
//! of 20, `robin_hood.rs`). A sliding window of a limit below `2^16`
//! ([`NarrowSliding`]: the limits of most applications) also stores its
//! counts in 16 bits: 8 bytes, a slot of 16 again.
//!
//! The form is exact: the shard keeps every stored window in
//! `base..base + 2^32`, so [`Packing::unpack`] gives back the state the
//! core returned, bit for bit. What keeps it so (`Shard::rebase`):
//!
//! - When the clock reaches the window `base + 2^32`, the base moves to
//!   `2^31` windows before now. A stored state of a window before the new
//!   base is then at least `2^31` windows old, so it is idle (a fixed
//!   window's state is equivalent to a key never seen from the next window
//!   on, a sliding window's from the one after): it is forgotten, exactly
//!   as the sweeper would forget it, and every other state is stored again
//!   relative to the new base. This happens once per `2^31` windows of
//!   clock time at most (24.8 days of 1 ms windows, 68 years of 1 s ones).
//! - A state the core returns is never of a window after `base + 2^32 - 1`
//!   then: its window is the current one or a stored one.
//! - Only a new key's state can be of a window before the base: the clock
//!   went back more than `2^31` windows behind the time of the last move.
//!   It is stored at the base window instead ([`Packing::clamp`]),
//!   which is stricter than the core's state and never looser:
//!   `docs/semantics.md` ("Stored states") argues it.

use std::fmt::Debug;

use ratelimit_core::{
    Algorithm, Decision, Error, FixedWindow, FixedWindowState, SlidingWindow, SlidingWindowState,
    TokenBucket, TokenBucketState,
};

/// Windows a shard's base stays behind the current window when it moves.
pub(crate) const BASE_LAG: u64 = 1 << 31;

/// Windows a stored offset can count from the base.
pub(crate) const OFFSETS: u64 = 1 << 32;

/// An algorithm whose states a shard stores in its own form.
pub(crate) trait Packing: Algorithm {
    /// The stored form of [`Algorithm::State`].
    type Packed: Copy + Default + Debug + Send + Sync;

    /// Microseconds per window if states hold a window index, which is
    /// then stored relative to the shard's base.
    fn window_us(&self) -> Option<u64>;

    /// The window index of `state` (`0` for states without one).
    fn window_of(state: &Self::State) -> u64;

    /// `state`, whose window must be in `base..base + 2^32`, relative to
    /// `base`.
    fn pack(state: Self::State, base: u64) -> Self::Packed;

    /// `state` with its window moved up to `base` if it was before it: the
    /// stricter state stored for a new key when the clock went back past
    /// the base (see the module).
    fn clamp(state: Self::State, base: u64) -> Self::State;

    /// The state `pack(state, base)` stored, the same `base` given.
    fn unpack(packed: Self::Packed, base: u64) -> Self::State;
}

/// The offset of `window` from `base`, for a window in
/// `base..base + 2^32`.
#[inline]
fn offset(window: u64, base: u64) -> u32 {
    debug_assert!(
        (base..base.saturating_add(OFFSETS)).contains(&window),
        "window {window} out of the range of {base}"
    );
    // Truncating is intended: the offset is below 2^32.
    window.wrapping_sub(base) as u32
}

impl Packing for TokenBucket {
    type Packed = TokenBucketState;

    #[inline]
    fn window_us(&self) -> Option<u64> {
        None
    }

    #[inline]
    fn window_of(_: &TokenBucketState) -> u64 {
        0
    }

    #[inline]
    fn pack(state: TokenBucketState, _: u64) -> TokenBucketState {
        state
    }

    #[inline]
    fn clamp(state: TokenBucketState, _: u64) -> TokenBucketState {
        state
    }

    #[inline]
    fn unpack(packed: TokenBucketState, _: u64) -> TokenBucketState {
        packed
    }
}

/// A [`FixedWindowState`] in 8 bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PackedFixed {
    window: u32,
    count: u32,
}

impl Packing for FixedWindow {
    type Packed = PackedFixed;

    #[inline]
    fn window_us(&self) -> Option<u64> {
        Some(self.window_micros())
    }

    #[inline]
    fn window_of(state: &FixedWindowState) -> u64 {
        state.window
    }

    #[inline]
    fn pack(state: FixedWindowState, base: u64) -> PackedFixed {
        PackedFixed {
            window: offset(state.window, base),
            count: state.count,
        }
    }

    #[inline]
    fn clamp(state: FixedWindowState, base: u64) -> FixedWindowState {
        FixedWindowState::new(state.window.max(base), state.count)
    }

    #[inline]
    fn unpack(packed: PackedFixed, base: u64) -> FixedWindowState {
        FixedWindowState::new(base + u64::from(packed.window), packed.count)
    }
}

/// A [`SlidingWindowState`] in 12 bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PackedSliding {
    window: u32,
    previous: u32,
    current: u32,
}

impl Packing for SlidingWindow {
    type Packed = PackedSliding;

    #[inline]
    fn window_us(&self) -> Option<u64> {
        Some(self.window_micros())
    }

    #[inline]
    fn window_of(state: &SlidingWindowState) -> u64 {
        state.window
    }

    #[inline]
    fn pack(state: SlidingWindowState, base: u64) -> PackedSliding {
        PackedSliding {
            window: offset(state.window, base),
            previous: state.previous,
            current: state.current,
        }
    }

    #[inline]
    fn clamp(state: SlidingWindowState, base: u64) -> SlidingWindowState {
        SlidingWindowState::new(state.window.max(base), state.previous, state.current)
    }

    #[inline]
    fn unpack(packed: PackedSliding, base: u64) -> SlidingWindowState {
        SlidingWindowState::new(
            base + u64::from(packed.window),
            packed.previous,
            packed.current,
        )
    }
}

/// A sliding window of a limit below `2^16`, whose states are stored in 8
/// bytes instead of 12 ([`PackedNarrow`]): beside an 8-byte key, a slot of
/// 16 bytes, as a token bucket's, instead of 20. It decides exactly as the
/// policy it wraps.
#[derive(Debug)]
pub(crate) struct NarrowSliding(SlidingWindow);

impl NarrowSliding {
    /// `policy` stored narrow, if its limit is below `2^16`.
    pub(crate) fn new(policy: SlidingWindow) -> Option<Self> {
        (policy.limit() <= u64::from(u16::MAX)).then_some(Self(policy))
    }
}

/// A [`SlidingWindowState`] of a [`NarrowSliding`] in 8 bytes: its counts
/// in 16 bits each, which hold them (a count never exceeds the limit: a
/// check takes only what leaves the estimate, which is at least the
/// current count, within it; the previous count is a former current one).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PackedNarrow {
    window: u32,
    previous: u16,
    current: u16,
}

impl Algorithm for NarrowSliding {
    type State = SlidingWindowState;

    #[inline]
    fn limit(&self) -> u64 {
        self.0.limit()
    }

    // Always inlined, as the policy's own (see its comment).
    #[inline(always)]
    fn check(
        &self,
        state: &SlidingWindowState,
        now: u64,
        cost: u64,
    ) -> Result<(Decision, SlidingWindowState), Error> {
        self.0.check(state, now, cost)
    }

    #[inline]
    fn peek(&self, state: &SlidingWindowState, now: u64) -> Decision {
        self.0.peek(state, now)
    }

    #[inline]
    fn expires_at(&self, state: &SlidingWindowState) -> u64 {
        self.0.expires_at(state)
    }

    #[inline]
    fn is_idle(&self, state: &SlidingWindowState, now: u64) -> bool {
        self.0.is_idle(state, now)
    }

    #[inline]
    fn validate_cost(&self, cost: u64) -> Result<(), Error> {
        self.0.validate_cost(cost)
    }
}

/// The narrow form is the wide one ([`PackedSliding`]) with its counts in
/// 16 bits: the window offset is kept the same way.
impl Packing for NarrowSliding {
    type Packed = PackedNarrow;

    #[inline]
    fn window_us(&self) -> Option<u64> {
        self.0.window_us()
    }

    #[inline]
    fn window_of(state: &SlidingWindowState) -> u64 {
        SlidingWindow::window_of(state)
    }

    #[inline]
    fn pack(state: SlidingWindowState, base: u64) -> PackedNarrow {
        let wide = SlidingWindow::pack(state, base);
        debug_assert!(
            wide.previous.max(wide.current) <= u32::from(u16::MAX),
            "{state:?}: a count above 16 bits"
        );
        // Truncating is intended: the counts are within a 16-bit limit.
        PackedNarrow {
            window: wide.window,
            previous: wide.previous as u16,
            current: wide.current as u16,
        }
    }

    #[inline]
    fn clamp(state: SlidingWindowState, base: u64) -> SlidingWindowState {
        SlidingWindow::clamp(state, base)
    }

    #[inline]
    fn unpack(packed: PackedNarrow, base: u64) -> SlidingWindowState {
        let wide = PackedSliding {
            window: packed.window,
            previous: u32::from(packed.previous),
            current: u32::from(packed.current),
        };
        SlidingWindow::unpack(wide, base)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The largest window index a `u64` clock reaches (1 ms windows).
    const LAST_WINDOW: u64 = u64::MAX / 1000;

    fn base() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0), Just(LAST_WINDOW - BASE_LAG), 0..=LAST_WINDOW]
    }

    fn offset_in_range() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0), Just(OFFSETS - 1), Just(BASE_LAG), 0..OFFSETS]
    }

    #[test]
    fn window_states_are_stored_in_8_and_12_bytes() {
        assert_eq!(std::mem::size_of::<PackedFixed>(), 8);
        assert_eq!(std::mem::size_of::<PackedSliding>(), 12);
        assert_eq!(std::mem::size_of::<PackedNarrow>(), 8);
    }

    fn sliding(limit: u64) -> SlidingWindow {
        SlidingWindow::new(limit, std::time::Duration::from_millis(1)).unwrap()
    }

    #[test]
    fn a_sliding_window_is_stored_narrow_up_to_a_16_bit_limit() {
        for limit in [1, 2, 1_000, u64::from(u16::MAX)] {
            assert!(
                NarrowSliding::new(sliding(limit)).is_some(),
                "limit {limit}"
            );
        }
        for limit in [1 << 16, u64::from(u32::MAX)] {
            assert!(
                NarrowSliding::new(sliding(limit)).is_none(),
                "limit {limit}"
            );
        }
    }

    proptest! {
        #[test]
        fn a_window_in_range_comes_back_as_it_was(
            base in base(),
            offset in offset_in_range(),
            count in any::<u32>(),
            previous in any::<u32>(),
        ) {
            let window = base + offset;
            let fixed = FixedWindowState::new(window, count);
            prop_assert_eq!(FixedWindow::unpack(FixedWindow::pack(fixed, base), base), fixed);
            let sliding = SlidingWindowState::new(window, previous, count);
            prop_assert_eq!(
                SlidingWindow::unpack(SlidingWindow::pack(sliding, base), base),
                sliding
            );
            let bucket = TokenBucketState::new(window);
            prop_assert_eq!(TokenBucket::unpack(TokenBucket::pack(bucket, base), base), bucket);
            // A narrow sliding window's counts are at most `u16::MAX`.
            let narrow = SlidingWindowState::new(window, previous >> 16, count >> 16);
            prop_assert_eq!(
                NarrowSliding::unpack(NarrowSliding::pack(narrow, base), base),
                narrow
            );
        }

        #[test]
        fn clamping_moves_only_a_window_before_the_base_and_to_it(
            base in 1..=LAST_WINDOW,
            window in 0..=LAST_WINDOW,
            count in any::<u32>(),
        ) {
            let to = window.max(base);
            let fixed = FixedWindow::clamp(FixedWindowState::new(window, count), base);
            prop_assert_eq!(fixed, FixedWindowState::new(to, count));
            let sliding = SlidingWindow::clamp(SlidingWindowState::new(window, 1, count), base);
            prop_assert_eq!(sliding, SlidingWindowState::new(to, 1, count));
        }
    }
}
