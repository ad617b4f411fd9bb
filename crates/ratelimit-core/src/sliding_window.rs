//! Sliding window: the two-counter estimate of the last `window`.

use std::time::Duration;

use crate::domain::{div_ceil, stored_count, validate_window_policy};
use crate::{Algorithm, ConfigError, Decision, Error};

/// At most `limit` cost in any `window`, estimated from two counters: the
/// current aligned window and the previous one, weighted by how much of it
/// still overlaps the last `window`.
///
/// Smooths the boundary burst of a [`FixedWindow`](crate::FixedWindow) at
/// the price of a third integer per key. The previous window's weight is
/// rounded **up**, per millisecond, so the estimate never admits more than
/// the exact real-valued formula would. The repository's
/// [`docs/semantics.md`](https://github.com/ratelimit-rs/ratelimit/blob/main/docs/semantics.md#sliding-window-details)
/// argues the rounding.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::{Algorithm, SlidingWindow};
///
/// let policy = SlidingWindow::new(10, Duration::from_secs(10)).unwrap();
/// // Fill the window [0 s, 10 s).
/// let (_, state) = policy.check(&Default::default(), 1_000_000, 10).unwrap();
/// // At 12 s, 80 % of the previous window still counts: ceil(10 * 0.8) = 8.
/// let d = policy.peek(&state, 12_000_000);
/// assert_eq!(d.remaining, 2);
/// // Three units wait until the weight has fallen to 7: at 13 s.
/// let (denied, _) = policy.check(&state, 12_000_000, 3).unwrap();
/// assert_eq!(denied.retry_after, Some(Duration::from_secs(1)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlidingWindow {
    limit: u64,
    window_us: u64,
    window_ms: u64,
}

/// The stored state of a [`SlidingWindow`] key: 16 bytes (see
/// [`Algorithm`] for why states are small, fixed-size and `Copy`).
///
/// # Examples
///
/// ```
/// use ratelimit_core::SlidingWindowState;
///
/// let state = SlidingWindowState::new(170_000_001, 7, 2);
/// assert_eq!((state.window, state.previous, state.current), (170_000_001, 7, 2));
/// assert_eq!(std::mem::size_of::<SlidingWindowState>(), 16);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SlidingWindowState {
    /// Index of the current window (`floor(t / window)`).
    pub window: u64,
    /// Cost taken in the window before it: at most the limit, so 32 bits.
    pub previous: u32,
    /// Cost taken in the current window: at most the limit, so 32 bits.
    pub current: u32,
}

impl SlidingWindowState {
    /// A state with the given window index and counters.
    #[must_use]
    pub const fn new(window: u64, previous: u32, current: u32) -> Self {
        Self {
            window,
            previous,
            current,
        }
    }
}

/// The state rolled forward to `now`, with the estimate it gives.
struct View {
    state: SlidingWindowState,
    estimate: u64,
}

impl SlidingWindow {
    /// A sliding window of `limit` per `window`.
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
    /// # use ratelimit_core::SlidingWindow;
    /// let p = SlidingWindow::new(5, Duration::from_secs(30)).unwrap();
    /// assert_eq!(p.window(), Duration::from_secs(30));
    /// assert!(SlidingWindow::new(5, Duration::ZERO).is_err());
    /// ```
    pub fn new(limit: u64, window: Duration) -> Result<Self, ConfigError> {
        let (limit, window_ms) = validate_window_policy(limit, window, "window")?;
        Ok(Self {
            limit,
            window_us: window_ms * 1000,
            window_ms,
        })
    }

    /// `ceil(count * (W_ms - elapsed_ms) / W_ms)`: the part of a previous
    /// window's count that still overlaps the last `window`.
    #[inline]
    fn weighted(&self, count: u64, elapsed_ms: u64) -> u64 {
        let left = self.window_ms.saturating_sub(elapsed_ms);
        div_ceil(count.saturating_mul(left), self.window_ms)
    }

    /// Rolls `state` forward to `now`. If the clock went back before the
    /// stored window, the stored window is kept and read at its start, where
    /// its estimate is highest.
    #[inline]
    fn view(&self, state: &SlidingWindowState, now: u64) -> View {
        let k = now / self.window_us;
        let s = if k <= state.window {
            *state
        } else if k == state.window + 1 {
            SlidingWindowState::new(k, state.current, 0)
        } else {
            SlidingWindowState::new(k, 0, 0)
        };
        let start = s.window.saturating_mul(self.window_us);
        let elapsed_ms = now.saturating_sub(start) / 1000;
        let estimate = self
            .weighted(u64::from(s.previous), elapsed_ms)
            .saturating_add(u64::from(s.current));
        View { state: s, estimate }
    }

    /// The first instant at which `cost` fits, with no other traffic, for a
    /// rolled-forward state: within its window once the previous count has
    /// decayed enough, else in the next window once the current count has,
    /// else at the start of the window after.
    fn allowed_at(&self, s: &SlidingWindowState, cost: u64) -> u64 {
        let start = s.window.saturating_mul(self.window_us);
        // ceil(p * (W - e) / W) <= a  <=>  W - e <= floor(a * W / p).
        // A zero count leaves nothing to decay: the cost fits from the start.
        let first_ms = |count: u64, budget: u64| -> u64 {
            budget
                .saturating_mul(self.window_ms)
                .checked_div(count)
                .map_or(0, |keep| self.window_ms.saturating_sub(keep))
        };
        if let Some(budget) = self.limit.checked_sub(u64::from(s.current) + cost) {
            let e = first_ms(u64::from(s.previous), budget);
            if e < self.window_ms {
                return start.saturating_add(e * 1000);
            }
        }
        let next = start.saturating_add(self.window_us);
        let e = first_ms(u64::from(s.current), self.limit - cost);
        if e < self.window_ms {
            return next.saturating_add(e * 1000);
        }
        next.saturating_add(self.window_us)
    }

    #[inline]
    fn reset_at(&self, s: &SlidingWindowState) -> u64 {
        let start = s.window.saturating_mul(self.window_us);
        if s.current > 0 {
            start.saturating_add(2 * self.window_us)
        } else if s.previous > 0 {
            start.saturating_add(self.window_us)
        } else {
            0
        }
    }
}

window_api!(SlidingWindow);

impl Algorithm for SlidingWindow {
    type State = SlidingWindowState;

    #[inline]
    fn limit(&self) -> u64 {
        self.limit
    }

    // Always inlined: returned through a call, the decision and state
    // were copied piecewise into the caller's frame (store-to-load
    // forwarding stalls), which cost the memory backend a quarter of its
    // sliding-window check.
    #[inline(always)]
    fn check(
        &self,
        state: &SlidingWindowState,
        now: u64,
        cost: u64,
    ) -> Result<(Decision, SlidingWindowState), Error> {
        self.validate_cost(cost)?;
        let View { state: s, estimate } = self.view(state, now);
        if estimate.saturating_add(cost) <= self.limit {
            // current <= estimate, so current + cost <= limit.
            let current = stored_count(u64::from(s.current) + cost);
            let next = SlidingWindowState::new(s.window, s.previous, current);
            let remaining = self.limit - estimate - cost;
            let reset_after = self.reset_at(&next).saturating_sub(now);
            Ok((
                Decision::from_micros(true, self.limit, remaining, reset_after, 0),
                next,
            ))
        } else {
            let retry_after = self.allowed_at(&s, cost).saturating_sub(now);
            let reset_after = self.reset_at(&s).saturating_sub(now);
            Ok((
                Decision::from_micros(
                    false,
                    self.limit,
                    self.limit.saturating_sub(estimate),
                    reset_after,
                    retry_after,
                ),
                *state,
            ))
        }
    }

    #[inline]
    fn peek(&self, state: &SlidingWindowState, now: u64) -> Decision {
        let View { state: s, estimate } = self.view(state, now);
        let allowed = estimate < self.limit;
        let retry_after = if allowed {
            0
        } else {
            self.allowed_at(&s, 1).saturating_sub(now)
        };
        Decision::from_micros(
            allowed,
            self.limit,
            self.limit.saturating_sub(estimate),
            self.reset_at(&s).saturating_sub(now),
            retry_after,
        )
    }

    #[inline]
    fn expires_at(&self, state: &SlidingWindowState) -> u64 {
        self.reset_at(state)
    }
}
