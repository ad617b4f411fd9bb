//! The answer to one check.

use std::time::Duration;

use crate::FailurePolicy;

/// The outcome of one check (or peek) against one policy.
///
/// A denial is data, not an error: a limiter returns
/// `Ok(Decision { allowed: false, .. })` when the cost does not fit.
/// All durations have microsecond precision; they are rounded up to whole
/// seconds only when written to HTTP headers.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::Decision;
///
/// let denied = Decision::denied(5, 0, Duration::from_secs(12), Duration::from_secs(12));
/// assert!(!denied.allowed);
/// assert_eq!(denied.retry_after, Some(Duration::from_secs(12)));
///
/// let allowed = Decision::allowed(5, 4, Duration::from_secs(30));
/// assert_eq!(allowed.retry_after, None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Decision {
    /// Whether the cost was taken.
    pub allowed: bool,
    /// The policy's limit (the bucket capacity for a token bucket).
    pub limit: u64,
    /// After this decision, the largest cost a check at the same instant
    /// would be allowed.
    pub remaining: u64,
    /// Time until the key is back to a full quota (`remaining == limit`) if
    /// nothing else arrives; zero when already full.
    pub reset_after: Duration,
    /// Only when denied: the smallest wait after which the same cost would
    /// be allowed if nothing else arrives.
    pub retry_after: Option<Duration>,
    /// `Some` when the store could not decide and a [`FailurePolicy`]
    /// did instead: the numbers then describe no real quota (fail closed,
    /// fail open) or only a local one (fallback). `None` on every decision
    /// a store makes, so backends agree field for field.
    pub degraded: Option<FailurePolicy>,
}

impl Decision {
    /// An allowing decision.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::Decision;
    /// let d = Decision::allowed(10, 9, Duration::from_millis(1500));
    /// assert!(d.allowed && d.remaining == 9);
    /// ```
    #[must_use]
    pub const fn allowed(limit: u64, remaining: u64, reset_after: Duration) -> Self {
        Self {
            allowed: true,
            limit,
            remaining,
            reset_after,
            retry_after: None,
            degraded: None,
        }
    }

    /// A denying decision.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::Decision;
    /// let d = Decision::denied(10, 0, Duration::from_secs(2), Duration::from_millis(200));
    /// assert!(!d.allowed);
    /// assert_eq!(d.retry_after, Some(Duration::from_millis(200)));
    /// ```
    #[must_use]
    pub const fn denied(
        limit: u64,
        remaining: u64,
        reset_after: Duration,
        retry_after: Duration,
    ) -> Self {
        Self {
            allowed: false,
            limit,
            remaining,
            reset_after,
            retry_after: Some(retry_after),
            degraded: None,
        }
    }

    /// Builds a decision from the integer microsecond fields the policies
    /// and the Redis scripts compute; `retry_after_us` is ignored when
    /// `allowed` is true.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::Decision;
    /// let d = Decision::from_micros(false, 5, 0, 30_000_000, 1_250);
    /// assert_eq!(d.retry_after, Some(Duration::from_micros(1_250)));
    /// ```
    #[must_use]
    #[inline]
    pub const fn from_micros(
        allowed: bool,
        limit: u64,
        remaining: u64,
        reset_after_us: u64,
        retry_after_us: u64,
    ) -> Self {
        Self {
            allowed,
            limit,
            remaining,
            reset_after: Duration::from_micros(reset_after_us),
            retry_after: if allowed {
                None
            } else {
                Some(Duration::from_micros(retry_after_us))
            },
            degraded: None,
        }
    }

    /// This decision, marked as made by `policy` while the store could
    /// not decide.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{Decision, FailurePolicy};
    /// let d = Decision::denied(5, 0, Duration::ZERO, Duration::from_secs(1))
    ///     .with_degraded(FailurePolicy::Closed);
    /// assert!(d.is_degraded());
    /// assert_eq!(d.degraded, Some(FailurePolicy::Closed));
    /// ```
    #[must_use]
    pub const fn with_degraded(mut self, policy: FailurePolicy) -> Self {
        self.degraded = Some(policy);
        self
    }

    /// True when a [`FailurePolicy`] made this decision instead of the
    /// store.
    #[must_use]
    pub const fn is_degraded(&self) -> bool {
        self.degraded.is_some()
    }
}
