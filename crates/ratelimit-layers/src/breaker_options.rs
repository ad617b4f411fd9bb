//! When a circuit breaker opens and how long it stays open.

use std::num::NonZeroU32;
use std::time::Duration;

use ratelimit_core::ConfigError;
use serde::Deserialize;

use crate::config::duration;

/// When a [`CircuitBreaker`](crate::CircuitBreaker) opens and how long it
/// stays open.
///
/// After `failure_threshold` consecutive failures (errors or timeouts of
/// the inner limiter) the breaker opens: calls fail at once without
/// touching the store. After `open_for`, one call probes the store; its
/// success closes the breaker, its failure opens it again.
///
/// Deserializes from `{ failure_threshold = 3, open_for = "1s" }`, both
/// optional.
///
/// # Examples
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use ratelimit_layers::BreakerOptions;
///
/// let options = BreakerOptions::default()
///     .with_failure_threshold(NonZeroU32::new(5).unwrap())
///     .with_open_for(Duration::from_millis(500));
/// assert_eq!(options.failure_threshold.get(), 5);
/// assert_eq!(BreakerOptions::default().open_for, Duration::from_secs(1));
///
/// let parsed: BreakerOptions = toml::from_str(r#"open_for = "250ms""#).unwrap();
/// assert_eq!(parsed.open_for, Duration::from_millis(250));
/// assert_eq!(parsed.failure_threshold.get(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "BreakerFile")]
#[non_exhaustive]
pub struct BreakerOptions {
    /// Consecutive failures that open the breaker (default 3).
    pub failure_threshold: NonZeroU32,
    /// How long the breaker stays open before a probe (default 1 s).
    pub open_for: Duration,
}

impl BreakerOptions {
    /// The default threshold: three failures in a row.
    pub const DEFAULT_FAILURE_THRESHOLD: NonZeroU32 = match NonZeroU32::new(3) {
        Some(n) => n,
        None => unreachable!(),
    };
    /// The default time open before a probe.
    pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(1);

    /// Opens after `failure_threshold` consecutive failures.
    #[must_use]
    pub const fn with_failure_threshold(mut self, failure_threshold: NonZeroU32) -> Self {
        self.failure_threshold = failure_threshold;
        self
    }

    /// Stays open for `open_for` before a probe. Zero lets the next call
    /// probe at once (still one probe at a time).
    #[must_use]
    pub const fn with_open_for(mut self, open_for: Duration) -> Self {
        self.open_for = open_for;
        self
    }
}

impl Default for BreakerOptions {
    fn default() -> Self {
        Self {
            failure_threshold: Self::DEFAULT_FAILURE_THRESHOLD,
            open_for: Self::DEFAULT_OPEN_FOR,
        }
    }
}

/// The written form of [`BreakerOptions`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakerFile {
    #[serde(default)]
    failure_threshold: Option<u32>,
    #[serde(default)]
    open_for: Option<String>,
}

impl TryFrom<BreakerFile> for BreakerOptions {
    type Error = ConfigError;

    fn try_from(file: BreakerFile) -> Result<Self, ConfigError> {
        let mut options = Self::default();
        if let Some(n) = file.failure_threshold {
            options.failure_threshold = NonZeroU32::new(n).ok_or_else(|| {
                ConfigError::new(
                    "breaker.failure_threshold",
                    "0 is out of range; expected at least 1",
                )
            })?;
        }
        if let Some(text) = file.open_for {
            options.open_for = duration("breaker.open_for", &text)?;
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field() {
        for (text, needle) in [
            (
                "failure_threshold = 0",
                "invalid `breaker.failure_threshold`: 0 is out of range",
            ),
            (
                "open_for = \"1\"",
                "invalid `breaker.open_for`: \"1\" is missing a unit",
            ),
            ("threshold = 2", "unknown field `threshold`"),
        ] {
            let err = toml::from_str::<BreakerOptions>(text).unwrap_err();
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
    }
}
