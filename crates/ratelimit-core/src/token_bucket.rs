//! Token bucket with continuous refill, stored as GCRA.

use std::time::Duration;

use crate::domain::{div_ceil, validate_limit, validate_period, MAX_BUCKET_SPAN_US};
use crate::{Algorithm, ConfigError, Decision, Error};

/// A bucket of `capacity` tokens refilled continuously at `refill` tokens
/// per `period`; a check of cost `c` takes `c` tokens.
///
/// Stored as the generic cell rate algorithm: one timestamp per key (the
/// theoretical arrival time), so it is as cheap as a fixed window, allows
/// bursts up to `capacity` and then a smooth rate with no boundary effect.
/// The emission interval is `T = ceil(period / refill)` µs.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::{Algorithm, TokenBucket};
///
/// // Bursts of 10, then 1 per 100 ms.
/// let bucket = TokenBucket::new(10, 10, Duration::from_secs(1)).unwrap();
/// assert_eq!(bucket.emission_interval(), Duration::from_millis(100));
/// let (d, state) = bucket.check(&Default::default(), 0, 10).unwrap();
/// assert!(d.allowed);
/// assert_eq!(d.remaining, 0);
/// assert_eq!(d.reset_after, Duration::from_secs(1));
/// assert_eq!(bucket.peek(&state, 250_000).remaining, 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenBucket {
    capacity: u64,
    refill: u64,
    period_us: u64,
    /// Emission interval `T`, in µs.
    interval: u64,
    /// `capacity * T`, in µs.
    span: u64,
}

/// The stored state of a [`TokenBucket`] key: 8 bytes (see [`Algorithm`]
/// for why states are small, fixed-size and `Copy`).
///
/// # Examples
///
/// ```
/// use ratelimit_core::TokenBucketState;
///
/// assert_eq!(TokenBucketState::new(1_700_000_000_000_000).tat, 1_700_000_000_000_000);
/// assert_eq!(std::mem::size_of::<TokenBucketState>(), 8);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TokenBucketState {
    /// Theoretical arrival time, µs since the epoch: the bucket is full from
    /// this instant on. `0` (the default) is a full bucket.
    pub tat: u64,
}

impl TokenBucketState {
    /// A state with the given theoretical arrival time.
    #[must_use]
    pub const fn new(tat: u64) -> Self {
        Self { tat }
    }
}

impl TokenBucket {
    /// A bucket of `capacity` tokens, refilled by `refill` tokens every
    /// `period`.
    ///
    /// # Errors
    ///
    /// When `capacity` is not in `1..=2^32-1`, `refill` is zero or larger
    /// than the period in microseconds (the emission interval must be at
    /// least 1 µs), `period` is not a whole number of milliseconds in
    /// `1 ms..=2^36 ms`, or `capacity * T >= 2^51` µs.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::TokenBucket;
    /// let b = TokenBucket::new(100, 5, Duration::from_secs(1)).unwrap();
    /// assert_eq!(b.emission_interval(), Duration::from_millis(200));
    /// let err = TokenBucket::new(100, 0, Duration::from_secs(1)).unwrap_err();
    /// assert_eq!(err.field(), "refill");
    /// ```
    pub fn new(capacity: u64, refill: u64, period: Duration) -> Result<Self, ConfigError> {
        let capacity = validate_limit(capacity, "capacity")?;
        let period_ms = validate_period(period, "period")?;
        let period_us = period_ms * 1000;
        if refill == 0 || refill > period_us {
            return Err(ConfigError::new(
                "refill",
                format!(
                    "{refill} is out of range; expected an integer from 1 to {period_us} \
                     (at most one token per microsecond of the {period_ms} ms period)"
                ),
            ));
        }
        let interval = div_ceil(period_us, refill);
        let span = u128::from(capacity) * u128::from(interval);
        if span >= u128::from(MAX_BUCKET_SPAN_US) {
            return Err(ConfigError::new(
                "capacity",
                format!(
                    "{capacity} tokens refilled at one per {interval} µs take too long to \
                     refill to compute exactly: `capacity` times the emission interval must \
                     be below 2^51 µs (about 71 years)"
                ),
            ));
        }
        Ok(Self {
            capacity,
            refill,
            period_us,
            interval,
            // Cannot truncate: span < 2^51 was just checked.
            span: span as u64,
        })
    }

    /// A bucket of `capacity` that refills `rate` tokens per second.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    ///
    /// # Examples
    ///
    /// ```
    /// # use ratelimit_core::TokenBucket;
    /// let b = TokenBucket::per_second(20, 4).unwrap();
    /// assert_eq!(b.emission_interval().as_millis(), 250);
    /// ```
    pub fn per_second(capacity: u64, rate: u64) -> Result<Self, ConfigError> {
        Self::new(capacity, rate, Duration::from_secs(1))
    }

    /// A bucket of `capacity` that refills `rate` tokens per minute.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    ///
    /// # Examples
    ///
    /// ```
    /// # use ratelimit_core::TokenBucket;
    /// let b = TokenBucket::per_minute(20, 60).unwrap();
    /// assert_eq!(b.emission_interval().as_secs(), 1);
    /// ```
    pub fn per_minute(capacity: u64, rate: u64) -> Result<Self, ConfigError> {
        Self::new(capacity, rate, Duration::from_secs(60))
    }

    /// The bucket capacity.
    #[must_use]
    pub const fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Tokens added per [`period`](Self::period).
    #[must_use]
    pub const fn refill(&self) -> u64 {
        self.refill
    }

    /// The refill period.
    #[must_use]
    pub const fn period(&self) -> Duration {
        Duration::from_micros(self.period_us)
    }

    /// The emission interval `T = ceil(period / refill)`: the time one token
    /// takes to come back.
    #[must_use]
    pub const fn emission_interval(&self) -> Duration {
        Duration::from_micros(self.interval)
    }

    /// The time an empty bucket takes to fill: `capacity * T`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::TokenBucket;
    /// let b = TokenBucket::new(10, 1, Duration::from_secs(1)).unwrap();
    /// assert_eq!(b.fill_time(), Duration::from_secs(10));
    /// ```
    #[must_use]
    pub const fn fill_time(&self) -> Duration {
        Duration::from_micros(self.span)
    }

    /// The emission interval in microseconds.
    #[must_use]
    pub const fn emission_interval_micros(&self) -> u64 {
        self.interval
    }

    /// `remaining` and `reset_after` for a stored `tat` at `now`.
    #[inline]
    fn fields(&self, tat: u64, now: u64) -> (u64, u64) {
        let debt = tat.saturating_sub(now);
        (self.span.saturating_sub(debt) / self.interval, debt)
    }
}

impl Algorithm for TokenBucket {
    type State = TokenBucketState;

    #[inline]
    fn limit(&self) -> u64 {
        self.capacity
    }

    // Always inlined, as the sliding window's: a policy of a set returns
    // its decision and state through the set check's frame otherwise.
    #[inline(always)]
    fn check(
        &self,
        state: &TokenBucketState,
        now: u64,
        cost: u64,
    ) -> Result<(Decision, TokenBucketState), Error> {
        self.validate_cost(cost)?;
        let t0 = state.tat.max(now);
        // Cannot overflow in the domain: cost * T <= span < 2^51.
        let tat = t0.saturating_add(cost * self.interval);
        let limit_at = now.saturating_add(self.span);
        if tat <= limit_at {
            let (remaining, reset_after) = self.fields(tat, now);
            Ok((
                Decision::from_micros(true, self.capacity, remaining, reset_after, 0),
                TokenBucketState::new(tat),
            ))
        } else {
            let (remaining, reset_after) = self.fields(state.tat, now);
            Ok((
                Decision::from_micros(false, self.capacity, remaining, reset_after, tat - limit_at),
                *state,
            ))
        }
    }

    #[inline]
    fn peek(&self, state: &TokenBucketState, now: u64) -> Decision {
        let (remaining, reset_after) = self.fields(state.tat, now);
        let allowed = remaining > 0;
        let retry_after = if allowed {
            0
        } else {
            state
                .tat
                .max(now)
                .saturating_add(self.interval)
                .saturating_sub(now.saturating_add(self.span))
        };
        Decision::from_micros(allowed, self.capacity, remaining, reset_after, retry_after)
    }

    #[inline]
    fn expires_at(&self, state: &TokenBucketState) -> u64 {
        state.tat
    }
}
