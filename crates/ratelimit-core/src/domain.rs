//! The exact-arithmetic domain (SPEC section 1).
//!
//! Redis evaluates Lua numbers as IEEE doubles, which are exact only below
//! 2^53. Every policy is checked against these bounds when it is built, so
//! that the Rust reference and the Lua scripts compute the same integers.

/// The largest limit (or bucket capacity) a policy accepts: `2^32 - 1`.
pub const MAX_LIMIT: u64 = u32::MAX as u64;

/// The longest window or refill period, in milliseconds: `2^36` ms (about
/// 2.2 years).
pub const MAX_PERIOD_MS: u64 = 1 << 36;

/// The bound on `limit * window_ms` for the window policies and on
/// `capacity * emission_interval_us` for the token bucket; both products must
/// be strictly below it.
///
/// For the window policies this is SPEC's `2^53`. The token bucket adds its
/// span to a timestamp, so it keeps two bits of headroom and is checked
/// against [`MAX_BUCKET_SPAN_US`] instead.
pub const MAX_PRODUCT: u64 = 1 << 53;

/// The bound on a token bucket's span `capacity * emission_interval_us`:
/// `2^51` µs (about 71 years). With timestamps below
/// [`MAX_TIMESTAMP_US`], every intermediate value of the token bucket stays
/// below `2^53`.
pub(crate) const MAX_BUCKET_SPAN_US: u64 = 1 << 51;

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
