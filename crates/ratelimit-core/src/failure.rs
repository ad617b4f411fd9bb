//! What a decision made without its store was based on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What answers a check when the store cannot decide (an error, a timeout,
/// an open circuit breaker).
///
/// The policy is applied by a wrapper around a limiter (the
/// `ratelimit-layers` crate's `Failover`), never by a store itself: a store
/// returns `Err` when it cannot decide. A decision the policy made carries
/// the policy in [`Decision::degraded`](crate::Decision::degraded), so a
/// middleware can tell it from a decision of the store and answer
/// accordingly.
///
/// Spelled `"closed"`, `"open"` or `"fallback"` in configuration
/// (`"fail_closed"` and `"fail_open"` are accepted too).
///
/// # Examples
///
/// ```
/// use ratelimit_core::FailurePolicy;
///
/// assert_eq!("closed".parse::<FailurePolicy>().unwrap(), FailurePolicy::Closed);
/// assert_eq!("fail_open".parse::<FailurePolicy>().unwrap(), FailurePolicy::Open);
/// assert_eq!(FailurePolicy::Fallback.to_string(), "fallback");
/// assert_eq!(FailurePolicy::default(), FailurePolicy::Closed);
///
/// let parsed: FailurePolicy = serde_json::from_str(r#""fallback""#).unwrap();
/// assert_eq!(parsed, FailurePolicy::Fallback);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Deny: nothing passes while the store is away. The default, because
    /// a limit usually guards something costly.
    #[default]
    #[serde(alias = "fail_closed")]
    Closed,
    /// Allow: availability over protection. The decision says nothing about
    /// the quota.
    #[serde(alias = "fail_open")]
    Open,
    /// Decide with another limiter (usually an in-process one of the same
    /// policy, whose counts are per process) until the store is back.
    Fallback,
}

impl FailurePolicy {
    /// Every policy, in the order of the enum.
    pub const ALL: [Self; 3] = [Self::Closed, Self::Open, Self::Fallback];

    /// The configuration spelling: `"closed"`, `"open"` or `"fallback"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::Fallback => "fallback",
        }
    }
}

impl fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`FailurePolicy`] from text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseFailurePolicyError(String);

impl fmt::Display for ParseFailurePolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown failure policy {:?}; expected \"closed\", \"open\" or \"fallback\"",
            self.0
        )
    }
}

impl std::error::Error for ParseFailurePolicyError {}

impl FromStr for FailurePolicy {
    type Err = ParseFailurePolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "closed" | "fail_closed" => Ok(Self::Closed),
            "open" | "fail_open" => Ok(Self::Open),
            "fallback" => Ok(Self::Fallback),
            other => Err(ParseFailurePolicyError(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_from_str_round_trip() {
        for policy in FailurePolicy::ALL {
            assert_eq!(policy.to_string().parse::<FailurePolicy>(), Ok(policy));
        }
        let err = "shut".parse::<FailurePolicy>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown failure policy \"shut\"; expected \"closed\", \"open\" or \"fallback\""
        );
    }
}
