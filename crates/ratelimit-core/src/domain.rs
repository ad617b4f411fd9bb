//! The exact-arithmetic domain.
//!
//! Redis evaluates Lua numbers as IEEE doubles, which are exact only below
//! 2^53. Every policy is checked against these bounds when it is built, so
//! that the Rust reference and the Lua scripts compute the same integers.

use std::time::Duration;

use crate::ConfigError;

/// The largest limit (or bucket capacity) a policy accepts: `2^32 - 1`.
pub const MAX_LIMIT: u64 = u32::MAX as u64;

/// The longest window or refill period, in milliseconds: `2^36` ms (about
/// 2.2 years).
pub const MAX_PERIOD_MS: u64 = 1 << 36;

/// The bound on `limit * window_ms` for the window policies and on
/// `capacity * emission_interval_us` for the token bucket; both products must
/// be strictly below it.
///
/// For the window policies this is `2^53`. The token bucket adds its
/// span to a timestamp, so it keeps two bits of headroom and is checked
/// against [`MAX_BUCKET_SPAN_US`] instead.
pub const MAX_PRODUCT: u64 = 1 << 53;

/// The bound on a token bucket's span `capacity * emission_interval_us`:
/// `2^51` µs (about 71 years). With timestamps below
/// [`MAX_TIMESTAMP_US`], every intermediate value of the token bucket stays
/// below `2^53`.
pub const MAX_BUCKET_SPAN_US: u64 = 1 << 51;

/// The largest timestamp, in µs since the epoch, for which the arithmetic is
/// guaranteed exact in every backend: `2^52` µs (the year 2112).
///
/// Later timestamps never panic; the Rust policies saturate instead.
pub const MAX_TIMESTAMP_US: u64 = 1 << 52;

/// `ceil(a / b)` for `b > 0`.
#[inline]
pub(crate) const fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

/// A count as a state stores it: `n` is at most the policy's limit.
#[inline]
pub(crate) fn stored_count(n: u64) -> u32 {
    // Cannot fail: callers pass a count they have just checked against the
    // limit, and `validate_limit` keeps every limit at most
    // `MAX_LIMIT = u32::MAX`.
    u32::try_from(n).expect("a stored count is at most the limit, which fits 32 bits")
}

/// Checks a window policy's `limit` and window against the exact domain and
/// returns `(limit, window_ms)`.
pub(crate) fn validate_window_policy(
    limit: u64,
    window: Duration,
    window_field: &'static str,
) -> Result<(u64, u64), ConfigError> {
    let limit = validate_limit(limit, "limit")?;
    let window_ms = validate_period(window, window_field)?;
    if u128::from(limit) * u128::from(window_ms) >= u128::from(MAX_PRODUCT) {
        return Err(ConfigError::new(
            "limit",
            format!(
                "{limit} per {window_ms} ms is too large to compute exactly: \
                 `limit` times the window in milliseconds must be below 2^53 \
                 (9007199254740992); lower the limit or shorten the window"
            ),
        ));
    }
    Ok((limit, window_ms))
}

/// Checks a limit or capacity: `1..=2^32-1`.
pub(crate) fn validate_limit(value: u64, field: &'static str) -> Result<u64, ConfigError> {
    if value == 0 || value > MAX_LIMIT {
        return Err(ConfigError::new(
            field,
            format!("{value} is out of range; expected an integer from 1 to {MAX_LIMIT}"),
        ));
    }
    Ok(value)
}

/// Checks a window or period: a whole number of milliseconds in
/// `1..=2^36`; returns the milliseconds.
pub(crate) fn validate_period(value: Duration, field: &'static str) -> Result<u64, ConfigError> {
    let range = || {
        format!("expected a whole number of milliseconds from 1 ms to {MAX_PERIOD_MS} ms (about 795 days)")
    };
    if !value.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(ConfigError::new(
            field,
            format!(
                "{value:?} is not a whole number of milliseconds; {}",
                range()
            ),
        ));
    }
    let ms = value.as_millis();
    if ms == 0 || ms > u128::from(MAX_PERIOD_MS) {
        return Err(ConfigError::new(
            field,
            format!("{value:?} is out of range; {}", range()),
        ));
    }
    // Cannot truncate: ms <= 2^36 was just checked.
    Ok(ms as u64)
}
