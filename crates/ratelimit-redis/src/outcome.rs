//! A decision together with who made it.

use ratelimit_core::Decision;

/// Who made a decision: Redis, or something standing in for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// The Redis script, atomically: the shared, authoritative answer.
    Redis,
    /// The local deny cache, repeating a recent denial from Redis.
    DenyCache,
    /// Redis could not decide; denied by [`FailurePolicy::FailClosed`](crate::FailurePolicy::FailClosed).
    FailClosed,
    /// Redis could not decide; allowed by [`FailurePolicy::FailOpen`](crate::FailurePolicy::FailOpen).
    FailOpen,
    /// Redis could not decide; the local fallback limiter did
    /// ([`FailurePolicy::Fallback`](crate::FailurePolicy::Fallback)).
    Fallback,
}

impl Source {
    /// True when Redis could not decide and the failure policy did.
    ///
    /// # Examples
    ///
    /// ```
    /// use ratelimit_redis::Source;
    /// assert!(Source::FailOpen.is_degraded());
    /// assert!(!Source::DenyCache.is_degraded());
    /// ```
    #[must_use]
    pub const fn is_degraded(self) -> bool {
        matches!(self, Self::FailClosed | Self::FailOpen | Self::Fallback)
    }
}

/// A [`Decision`] and its [`Source`], from
/// [`RedisLimiter::check_detailed`](crate::RedisLimiter::check_detailed).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::Decision;
/// use ratelimit_redis::{Outcome, Source};
///
/// let o = Outcome::new(Decision::allowed(5, 5, Duration::ZERO), Source::FailOpen);
/// assert!(o.decision.allowed && o.is_degraded());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// Who made it.
    pub source: Source,
}

impl Outcome {
    /// An outcome of `decision` made by `source`.
    #[must_use]
    pub const fn new(decision: Decision, source: Source) -> Self {
        Self { decision, source }
    }

    /// True when Redis could not decide and the failure policy did.
    #[must_use]
    pub const fn is_degraded(&self) -> bool {
        self.source.is_degraded()
    }
}
