//! Fixed window: at most `limit` per aligned window.

use std::time::Duration;

use crate::domain::{stored_count, validate_window_policy};
use crate::sliding_window::Reciprocal;
use crate::{Algorithm, ConfigError, Decision, Error};

/// At most `limit` cost per aligned window of length `window`
/// (windows start at multiples of `window` since the UNIX epoch).
///
/// The cheapest policy to store (a window index and a count) and the one
/// `@upstash/ratelimit` users know; its weakness is a burst of up to
/// `2 * limit` across a window boundary.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::{Algorithm, FixedWindow};
///
/// let policy = FixedWindow::new(5, Duration::from_secs(30)).unwrap();
/// let mut state = Default::default();
/// for _ in 0..5 {
///     let (d, next) = policy.check(&state, 10_000_000, 1).unwrap();
///     assert!(d.allowed);
///     state = next;
/// }
/// let (sixth, _) = policy.check(&state, 10_000_000, 1).unwrap();
/// assert!(!sixth.allowed);
/// // The window [0 s, 30 s) ends 20 s later.
/// assert_eq!(sixth.retry_after, Some(Duration::from_secs(20)));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FixedWindow {
    limit: u64,
    window_us: u64,
    /// Divides by `window_us`, for the window index.
    per_window_us: Reciprocal,
}

// By hand: the reciprocal is derived from the window, and not part of
// what a policy is.
impl std::fmt::Debug for FixedWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixedWindow")
            .field("limit", &self.limit)
            .field("window_us", &self.window_us)
            .finish()
    }
}

/// The stored state of a [`FixedWindow`] key: 16 bytes (see
/// [`Algorithm`] for why states are small, fixed-size and `Copy`).
///
/// # Examples
///
/// ```
/// use ratelimit_core::FixedWindowState;
///
/// let state = FixedWindowState::new(56_666_667, 3);
/// assert_eq!((state.window, state.count), (56_666_667, 3));
/// assert_eq!(std::mem::size_of::<FixedWindowState>(), 16);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct FixedWindowState {
    /// Index of the window the count belongs to (`floor(t / window)`).
    pub window: u64,
    /// Cost taken in that window: at most the limit, so 32 bits.
    pub count: u32,
}

impl FixedWindowState {
    /// A state with the given window index and count.
    #[must_use]
    pub const fn new(window: u64, count: u32) -> Self {
        Self { window, count }
    }
}

impl FixedWindow {
    /// A fixed window of `limit` per `window`.
    ///
    /// # Errors
    ///
    /// When `limit` is not in `1..=2^32-1`, `window` is not a whole number of
    /// milliseconds in `1 ms..=2^36 ms`, or `limit * window_ms >= 2^53`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::FixedWindow;
    /// let p = FixedWindow::new(100, Duration::from_secs(60)).unwrap();
    /// assert_eq!(p.window(), Duration::from_secs(60));
    /// assert!(FixedWindow::new(100, Duration::from_micros(1500)).is_err());
    /// ```
    pub fn new(limit: u64, window: Duration) -> Result<Self, ConfigError> {
        let (limit, window_ms) = validate_window_policy(limit, window, "window")?;
        Ok(Self {
            limit,
            window_us: window_ms * 1000,
            per_window_us: Reciprocal::new(window_ms * 1000),
        })
    }

    /// The state as of `now` and the effective window index: a later window
    /// starts empty; an earlier one (the clock went back) keeps the stored
    /// window, which is never reopened.
    #[inline]
    fn current(&self, state: &FixedWindowState, now: u64) -> FixedWindowState {
        let k = if now < Reciprocal::EXACT_BELOW {
            self.per_window_us.div(now)
        } else {
            now / self.window_us
        };
        if k > state.window {
            FixedWindowState::new(k, 0)
        } else {
            *state
        }
    }

    #[inline]
    fn decide(&self, s: &FixedWindowState, now: u64, allowed: bool) -> Decision {
        let end = s.window.saturating_add(1).saturating_mul(self.window_us);
        let wait = end.saturating_sub(now);
        let reset_after = if s.count > 0 { wait } else { 0 };
        Decision::from_micros(
            allowed,
            self.limit,
            self.limit.saturating_sub(u64::from(s.count)),
            reset_after,
            wait,
        )
    }
}

window_api!(FixedWindow);

impl Algorithm for FixedWindow {
    type State = FixedWindowState;

    #[inline]
    fn limit(&self) -> u64 {
        self.limit
    }

    // Always inlined, as the sliding window's: a policy of a set returns
    // its decision and state through the set check's frame otherwise.
    #[inline(always)]
    fn check(
        &self,
        state: &FixedWindowState,
        now: u64,
        cost: u64,
    ) -> Result<(Decision, FixedWindowState), Error> {
        self.validate_cost(cost)?;
        let s = self.current(state, now);
        let count = u64::from(s.count) + cost;
        if count <= self.limit {
            let next = FixedWindowState::new(s.window, stored_count(count));
            Ok((self.decide(&next, now, true), next))
        } else {
            Ok((self.decide(&s, now, false), *state))
        }
    }

    #[inline]
    fn peek(&self, state: &FixedWindowState, now: u64) -> Decision {
        let s = self.current(state, now);
        self.decide(&s, now, u64::from(s.count) < self.limit)
    }

    #[inline]
    fn expires_at(&self, state: &FixedWindowState) -> u64 {
        if state.count == 0 {
            0
        } else {
            state
                .window
                .saturating_add(1)
                .saturating_mul(self.window_us)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::{MAX_PERIOD_MS, MAX_PRODUCT};

    proptest! {
        /// Every field of every decision and state is what the plain
        /// division by the window gives, for any stored state and any
        /// time, the exact domain's edges included.
        #[test]
        fn check_and_peek_are_those_of_plain_division(
            window_ms in prop_oneof![Just(1u64), Just(1000), Just(MAX_PERIOD_MS), 1..=MAX_PERIOD_MS],
            limit in any::<u64>(),
            window in prop_oneof![any::<u64>(), Just(u64::MAX), 0..4u64],
            count in prop_oneof![any::<u32>(), 0..4u32],
            now in prop_oneof![
                any::<u64>(),
                0..1u64 << 52,
                (1u64 << 63) - 4..(1u64 << 63) + 4,
                u64::MAX - 4..=u64::MAX,
            ],
            near in prop::option::of((0..3u64, any::<u64>())),
            cost in 1..4u64,
        ) {
            let limit = limit % ((MAX_PRODUCT - 1) / window_ms).min(u64::from(u32::MAX)) + 1;
            let policy = FixedWindow::new(limit, Duration::from_millis(window_ms)).unwrap();
            let state = FixedWindowState::new(window, count);
            let now = match near {
                Some((k, offset)) => window
                    .saturating_add(k)
                    .saturating_mul(policy.window_us)
                    .saturating_add(offset % policy.window_us),
                None => now,
            };
            // The state as the plain division rolls it forward.
            let k = now / policy.window_us;
            let s = if k > state.window { FixedWindowState::new(k, 0) } else { state };
            let taken = u64::from(s.count) + cost;
            let want = if cost > limit {
                None
            } else if taken <= limit {
                let next = FixedWindowState::new(s.window, stored_count(taken));
                Some((policy.decide(&next, now, true), next))
            } else {
                Some((policy.decide(&s, now, false), state))
            };
            prop_assert_eq!(policy.check(&state, now, cost).ok(), want);
            prop_assert_eq!(
                policy.peek(&state, now),
                policy.decide(&s, now, u64::from(s.count) < limit)
            );
        }
    }
}
