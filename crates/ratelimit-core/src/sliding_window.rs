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
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlidingWindow {
    limit: u64,
    window_us: u64,
    window_ms: u64,
    /// Divides by `window_us`: the window index.
    per_window_us: Reciprocal,
    /// Divides by `2 * window_ms`: the previous window's weight (twice the
    /// window, so that a 1 ms window has a divisor too).
    per_two_windows_ms: Reciprocal,
}

// By hand: the reciprocals are derived from the window, and not part of
// what a policy is.
impl std::fmt::Debug for SlidingWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlidingWindow")
            .field("limit", &self.limit)
            .field("window_us", &self.window_us)
            .field("window_ms", &self.window_ms)
            .finish()
    }
}

/// Division by a divisor fixed when a policy is built, as one multiply and
/// one shift: a window policy divides by its window on every check, and a
/// division by a value known only at run time costs several times a
/// multiplication, on the path to the allow/deny bit.
///
/// `div(n) == n / d` exactly for every `n < 2^63` (Granlund and
/// Montgomery, "Division by invariant integers using multiplication",
/// 1994, theorem 4.2): with `l = ceil(log2 d)`, `s = 63 + l` and
/// `m = ceil(2^s / d)`, write `m * d = 2^s + r` with `0 <= r < d <= 2^l`
/// and `n = q * d + t` with `0 <= t < d`; then
/// `m * n / 2^s = q + (t + n * r / 2^s) / d`, and `n * r < 2^63 * 2^l = 2^s`
/// makes the fraction's numerator below `t + 1 <= d`: the floor is `q`.
/// And `m < 2^(s - l + 1) = 2^64`, so it is one word. With `d >= 2`,
/// `l >= 1` and `s >= 64`: the quotient is the high word of `m * n`
/// shifted by `s - 64`, a single shift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Reciprocal {
    magic: u64,
    /// `s - 64`.
    high_shift: u8,
}

impl Reciprocal {
    /// Numerators below this are divided exactly.
    pub(crate) const EXACT_BELOW: u64 = 1 << 63;

    /// The reciprocal of `d`, which must be in `2..=2^62` (a window
    /// policy's window in µs is in `1000..=2^36 * 1000`, below `2^46`).
    pub(crate) const fn new(d: u64) -> Self {
        assert!(d >= 2 && d <= 1 << 62, "a divisor in 2..=2^62");
        // ceil(log2 d), at least 1.
        let l = u64::BITS - (d - 1).leading_zeros();
        let shift = 63 + l;
        let magic = (1u128 << shift).div_ceil(d as u128);
        assert!(magic <= u64::MAX as u128, "below 2^64, as argued above");
        Self {
            // Cannot truncate: checked just above, and 64 <= shift <= 125.
            magic: magic as u64,
            high_shift: (shift - 64) as u8,
        }
    }

    /// `n / d`, for `n <` [`EXACT_BELOW`](Self::EXACT_BELOW).
    #[inline]
    pub(crate) const fn div(self, n: u64) -> u64 {
        debug_assert!(n < Self::EXACT_BELOW);
        // Cannot truncate: the high word of a product of two words.
        let high = ((self.magic as u128 * n as u128) >> 64) as u64;
        high >> self.high_shift
    }
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

/// The state rolled forward to `now`, with the estimate it gives and the
/// first µs of its window.
struct View {
    state: SlidingWindowState,
    estimate: u64,
    start: u64,
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
            per_window_us: Reciprocal::new(window_ms * 1000),
            per_two_windows_ms: Reciprocal::new(2 * window_ms),
        })
    }

    /// `ceil(count * left_ms / W_ms)`: the part of a previous window's
    /// count that still overlaps the last `window`, `left_ms` being
    /// `W_ms - elapsed_ms`.
    #[inline]
    fn weighted(&self, count: u64, left_ms: u64) -> u64 {
        let part = count.saturating_mul(left_ms);
        // Always so for a count the policy stored (`limit * W_ms < 2^53`).
        // Then `ceil(part / W_ms) = floor((part + W_ms - 1) / W_ms)
        // = floor((2 * part + 2 * W_ms - 2) / (2 * W_ms))`, and
        // `2 * part + 2 * W_ms - 2 < 2^54 + 2^37` is in the reciprocal's
        // range.
        if part < 1 << 53 {
            self.per_two_windows_ms
                .div(2 * part + (2 * self.window_ms - 2))
        } else {
            div_ceil(part, self.window_ms)
        }
    }

    /// `floor(now / window_us)`, the index of the window holding `now`.
    #[inline]
    fn window_index(&self, now: u64) -> u64 {
        if now < Reciprocal::EXACT_BELOW {
            self.per_window_us.div(now)
        } else {
            now / self.window_us
        }
    }

    /// Rolls `state` forward to `now`. If the clock went back before the
    /// stored window, the stored window is kept and read at its start, where
    /// its estimate is highest.
    // Always inlined: its `View` came back through memory otherwise.
    #[inline(always)]
    fn view(&self, state: &SlidingWindowState, now: u64) -> View {
        let k = self.window_index(now);
        let s = if k <= state.window {
            *state
        } else if k == state.window + 1 {
            SlidingWindowState::new(k, state.current, 0)
        } else {
            SlidingWindowState::new(k, 0, 0)
        };
        // `W_ms - floor((now - start) / 1000)`, `start` being the window's
        // first µs, `s.window * W_us`, saturating. In the window of `now`
        // (`k * W_us <= now < (k + 1) * W_us`), `start` is a whole number of
        // ms, so this is `(k + 1) * W_ms - floor(now / 1000)`, in
        // `1..=W_ms`, and `(k + 1) * W_ms <= now / 1000 + W_ms` does not
        // overflow. In a later window (the clock went back), `now` is
        // before `start`: nothing has elapsed.
        // The start is `k * W_us <= now` in the window of `now`, so taken
        // from `k`, known before the state is, rather than from the state.
        let (left_ms, start) = if s.window == k {
            ((k + 1) * self.window_ms - now / 1000, k * self.window_us)
        } else {
            (self.window_ms, s.window.saturating_mul(self.window_us))
        };
        let weighted = if s.previous == 0 {
            0
        } else {
            self.weighted(u64::from(s.previous), left_ms)
        };
        let estimate = weighted.saturating_add(u64::from(s.current));
        View {
            state: s,
            estimate,
            start,
        }
    }

    /// The first instant at which `cost` fits, with no other traffic, for a
    /// rolled-forward state: within its window once the previous count has
    /// decayed enough, else in the next window once the current count has,
    /// else at the start of the window after. `start` is the first µs of
    /// the state's window.
    fn allowed_at(&self, s: &SlidingWindowState, start: u64, cost: u64) -> u64 {
        // ceil(p * (W - e) / W) <= a  <=>  W - e <= floor(a * W / p).
        // A count within the budget (a zero count among them) fits from the
        // start: floor(a * W / p) >= W. A zero budget waits for the whole
        // count: floor(0 / p) = 0. Neither needs the division by a count.
        // (`a <= limit`, so `a * W < 2^53` does not saturate.)
        let first_ms = |count: u64, budget: u64| -> u64 {
            if budget >= count {
                0
            } else if budget == 0 {
                self.window_ms
            } else {
                self.window_ms
                    .saturating_sub(budget.saturating_mul(self.window_ms) / count)
            }
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
        self.reset_from(s, s.window.saturating_mul(self.window_us))
    }

    /// [`reset_at`](Self::reset_at) given the first µs of the state's
    /// window.
    #[inline]
    fn reset_from(&self, s: &SlidingWindowState, start: u64) -> u64 {
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
        let View {
            state: s,
            estimate,
            start,
        } = self.view(state, now);
        if estimate.saturating_add(cost) <= self.limit {
            // current <= estimate, so current + cost <= limit.
            let current = stored_count(u64::from(s.current) + cost);
            let next = SlidingWindowState::new(s.window, s.previous, current);
            let remaining = self.limit - estimate - cost;
            let reset_after = self.reset_from(&next, start).saturating_sub(now);
            Ok((
                Decision::from_micros(true, self.limit, remaining, reset_after, 0),
                next,
            ))
        } else {
            let retry_after = self.allowed_at(&s, start, cost).saturating_sub(now);
            let reset_after = self.reset_from(&s, start).saturating_sub(now);
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
        let View {
            state: s,
            estimate,
            start,
        } = self.view(state, now);
        let allowed = estimate < self.limit;
        let retry_after = if allowed {
            0
        } else {
            self.allowed_at(&s, start, 1).saturating_sub(now)
        };
        Decision::from_micros(
            allowed,
            self.limit,
            self.limit.saturating_sub(estimate),
            self.reset_from(&s, start).saturating_sub(now),
            retry_after,
        )
    }

    #[inline]
    fn expires_at(&self, state: &SlidingWindowState) -> u64 {
        self.reset_at(state)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::{MAX_PERIOD_MS, MAX_PRODUCT};

    /// The largest divisor a window policy makes: its window in µs.
    const MAX_WINDOW_US: u64 = MAX_PERIOD_MS * 1000;

    /// Divisors at the edges: 1 and 2, a power of two and its neighbours
    /// for every exponent up to the longest window in µs, the 1000s.
    fn edge_divisors() -> Vec<u64> {
        let mut d = vec![2, 3, 4, 999, 1000, 1001, MAX_WINDOW_US - 1, MAX_WINDOW_US];
        for e in 1..=46 {
            let p = 1u64 << e;
            d.extend([p - 1, p, p + 1, p * 1000 / 1024]);
        }
        d.retain(|&d| (2..=2 * MAX_WINDOW_US).contains(&d));
        d
    }

    /// Numerators at the edges for divisor `d`: near 0, near multiples of
    /// `d` at every scale, and near the top of the exact range.
    fn edge_numerators(d: u64) -> Vec<u64> {
        let top = Reciprocal::EXACT_BELOW - 1;
        let mut n = vec![
            0,
            1,
            d - 1,
            d,
            d + 1,
            top,
            top - 1,
            top - d,
            1 << 52,
            1 << 53,
        ];
        for e in 0..63 {
            let q = (1u64 << e) / d.max(1);
            for m in [q.saturating_sub(1), q, q + 1] {
                let base = m.saturating_mul(d);
                n.extend([base.saturating_sub(1), base, base.saturating_add(1)]);
            }
        }
        let q = top / d;
        n.extend([q * d - 1, q * d, (q * d).saturating_add(d - 1)]);
        n.retain(|&n| n < Reciprocal::EXACT_BELOW);
        n
    }

    #[test]
    fn the_reciprocal_divides_exactly_at_the_edges() {
        for d in edge_divisors() {
            let r = Reciprocal::new(d);
            for n in edge_numerators(d) {
                assert_eq!(r.div(n), n / d, "{n} / {d}");
            }
        }
    }

    #[test]
    fn the_reciprocal_of_every_small_divisor_divides_small_numerators() {
        for d in 2..=2048 {
            let r = Reciprocal::new(d);
            for n in 0..4 * d + 3 {
                assert_eq!(r.div(n), n / d, "{n} / {d}");
            }
        }
    }

    /// `weighted` against the rounded-up quotient it stands for, for a
    /// policy of `window_ms`.
    fn assert_weighted(window_ms: u64, count: u64, left_ms: u64) {
        let policy = SlidingWindow::new(1, Duration::from_millis(window_ms)).unwrap();
        assert_eq!(
            policy.weighted(count, left_ms),
            div_ceil(count.saturating_mul(left_ms), window_ms),
            "ceil({count} * {left_ms} / {window_ms})"
        );
    }

    #[test]
    fn the_weight_is_exact_at_the_edges() {
        let mut windows = vec![1, 2, 3, 999, 1000, 1001, MAX_PERIOD_MS - 1, MAX_PERIOD_MS];
        for e in 1..36 {
            windows.extend([(1u64 << e) - 1, 1 << e, (1 << e) + 1]);
        }
        for w in windows {
            let most = ((MAX_PRODUCT - 1) / w).min(u64::from(u32::MAX));
            let counts = [0, 1, 2, most - 1, most, most + 1, u64::from(u32::MAX)];
            for count in counts {
                // Around the 2^53 switch to plain division too.
                let near_switch = (MAX_PRODUCT / count.max(1)).min(w);
                for left in [
                    0,
                    1,
                    2,
                    w / 2,
                    w - 1,
                    w,
                    near_switch - 1,
                    near_switch,
                    near_switch + 1,
                ] {
                    assert_weighted(w, count, left.min(w));
                }
            }
        }
    }

    proptest! {
        #[test]
        fn the_reciprocal_divides_exactly(
            d in prop_oneof![2..=2 * MAX_WINDOW_US, 2..=1u64 << 20, 2..=1u64 << 62],
            n in prop_oneof![0..Reciprocal::EXACT_BELOW, 0..1u64 << 53, 0..1u64 << 20],
        ) {
            prop_assert_eq!(Reciprocal::new(d).div(n), n / d);
        }

        #[test]
        fn the_weight_is_exact(
            window_ms in prop_oneof![Just(1u64), Just(2), Just(MAX_PERIOD_MS), 1..=MAX_PERIOD_MS, 1..=2000u64],
            count in prop_oneof![any::<u32>(), 0..4u32, Just(u32::MAX)],
            left in any::<u64>(),
        ) {
            // Mostly within the window, as `view` passes it; beyond it too.
            let left_ms = if left % 8 == 0 { left } else { left % (window_ms + 1) };
            assert_weighted(window_ms, u64::from(count), left_ms);
        }

        /// Every field of every decision and state is what the plain
        /// divisions give, for any stored state (foreign ones too) and any
        /// time, the exact domain's edges included.
        #[test]
        fn check_and_peek_are_those_of_plain_division(
            (limit, window_ms) in policy(),
            window in prop_oneof![any::<u64>(), Just(u64::MAX), 0..4u64],
            previous in prop_oneof![any::<u32>(), 0..4u32],
            current in prop_oneof![any::<u32>(), 0..4u32],
            now in prop_oneof![
                any::<u64>(),
                0..1u64 << 52,
                (1u64 << 63) - 4..(1u64 << 63) + 4,
                u64::MAX - 4..=u64::MAX,
            ],
            // Relative to the stored window, so that the previous and the
            // current window are reached often.
            near in prop::option::of(0..3u64),
            offset_ms in any::<u64>(),
            cost in any::<u64>(),
        ) {
            let policy = SlidingWindow::new(limit, Duration::from_millis(window_ms)).unwrap();
            let state = SlidingWindowState::new(window, previous, current);
            let now = match near {
                Some(k) => window
                    .saturating_add(k)
                    .saturating_mul(policy.window_us)
                    .saturating_add(offset_ms % window_ms * 1000 + offset_ms % 1000),
                None => now,
            };
            // Mostly valid costs, the smallest and the largest often.
            let cost = match cost % 4 {
                0 => cost,
                1 => 1,
                2 => limit,
                _ => cost % limit + 1,
            };
            let old = Plain(policy);
            prop_assert_eq!(
                policy.check(&state, now, cost).map_err(|e| e.to_string()),
                old.check(&state, now, cost).map_err(|e| e.to_string())
            );
            prop_assert_eq!(policy.peek(&state, now), old.peek(&state, now));
        }
    }

    /// `(limit, window_ms)` in the exact domain, edges often.
    fn policy() -> impl Strategy<Value = (u64, u64)> {
        let window_ms = prop_oneof![
            Just(1u64),
            Just(1000),
            Just(MAX_PERIOD_MS),
            1..=MAX_PERIOD_MS,
            1..=100_000u64,
        ];
        window_ms.prop_flat_map(|w| {
            let most = ((MAX_PRODUCT - 1) / w).min(u64::from(u32::MAX));
            (
                prop_oneof![Just(1), Just(most), 1..=most, 1..=most.min(10)],
                Just(w),
            )
        })
    }

    /// The sliding window as it was computed before the reciprocals: plain
    /// divisions by the window, and by the count while waiting.
    struct Plain(SlidingWindow);

    impl Plain {
        fn view(&self, state: &SlidingWindowState, now: u64) -> (SlidingWindowState, u64) {
            let p = &self.0;
            let k = now / p.window_us;
            let s = if k <= state.window {
                *state
            } else if k == state.window + 1 {
                SlidingWindowState::new(k, state.current, 0)
            } else {
                SlidingWindowState::new(k, 0, 0)
            };
            let start = s.window.saturating_mul(p.window_us);
            let elapsed_ms = now.saturating_sub(start) / 1000;
            let left = p.window_ms.saturating_sub(elapsed_ms);
            let weighted = div_ceil(u64::from(s.previous).saturating_mul(left), p.window_ms);
            (s, weighted.saturating_add(u64::from(s.current)))
        }

        fn allowed_at(&self, s: &SlidingWindowState, cost: u64) -> u64 {
            let p = &self.0;
            let start = s.window.saturating_mul(p.window_us);
            let first_ms = |count: u64, budget: u64| -> u64 {
                budget
                    .saturating_mul(p.window_ms)
                    .checked_div(count)
                    .map_or(0, |keep| p.window_ms.saturating_sub(keep))
            };
            if let Some(budget) = p.limit.checked_sub(u64::from(s.current) + cost) {
                let e = first_ms(u64::from(s.previous), budget);
                if e < p.window_ms {
                    return start.saturating_add(e * 1000);
                }
            }
            let next = start.saturating_add(p.window_us);
            let e = first_ms(u64::from(s.current), p.limit - cost);
            if e < p.window_ms {
                return next.saturating_add(e * 1000);
            }
            next.saturating_add(p.window_us)
        }

        fn check(
            &self,
            state: &SlidingWindowState,
            now: u64,
            cost: u64,
        ) -> Result<(Decision, SlidingWindowState), Error> {
            let p = &self.0;
            p.validate_cost(cost)?;
            let (s, estimate) = self.view(state, now);
            if estimate.saturating_add(cost) <= p.limit {
                let current = stored_count(u64::from(s.current) + cost);
                let next = SlidingWindowState::new(s.window, s.previous, current);
                let reset_after = p.reset_at(&next).saturating_sub(now);
                let remaining = p.limit - estimate - cost;
                Ok((
                    Decision::from_micros(true, p.limit, remaining, reset_after, 0),
                    next,
                ))
            } else {
                let retry_after = self.allowed_at(&s, cost).saturating_sub(now);
                let reset_after = p.reset_at(&s).saturating_sub(now);
                let remaining = p.limit.saturating_sub(estimate);
                Ok((
                    Decision::from_micros(false, p.limit, remaining, reset_after, retry_after),
                    *state,
                ))
            }
        }

        fn peek(&self, state: &SlidingWindowState, now: u64) -> Decision {
            let p = &self.0;
            let (s, estimate) = self.view(state, now);
            let allowed = estimate < p.limit;
            let retry_after = if allowed {
                0
            } else {
                self.allowed_at(&s, 1).saturating_sub(now)
            };
            Decision::from_micros(
                allowed,
                p.limit,
                p.limit.saturating_sub(estimate),
                p.reset_at(&s).saturating_sub(now),
                retry_after,
            )
        }
    }
}
