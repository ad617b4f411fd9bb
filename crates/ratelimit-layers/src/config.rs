//! The whole resilience stack from configuration.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{parse_duration, ConfigError, FailurePolicy, Limiter, SetLimiter};
use serde::Deserialize;

use crate::{BreakerOptions, CircuitBreaker, DenyCache, Failover, Metered, SetFailover, Timeout};

/// Which resilience layers wrap a limiter, and how; deserialized from a
/// table such as:
///
/// ```toml
/// failure = "closed"        # or "open", "fallback"; default "closed"
/// timeout = "200ms"         # optional: no Timeout layer without it
/// breaker = { failure_threshold = 3, open_for = "1s" }   # the defaults
/// deny_cache = 10000        # optional: entries of the deny cache
/// ```
///
/// [`wrap`](Self::wrap) builds, from the store outwards,
/// `Metered(DenyCache(Failover(CircuitBreaker(Timeout(store)))))`; the
/// crate's README argues the order. A Closed denial's `retry_after` is the
/// breaker's `open_for`: the store is not tried again before.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use ratelimit_core::{FailurePolicy, Limiter, Policy, ReferenceLimiter};
/// use ratelimit_layers::ResilienceConfig;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let config: ResilienceConfig = toml::from_str(r#"
///     failure = "fallback"
///     timeout = "200ms"
///     breaker = { failure_threshold = 5 }
/// "#).unwrap();
/// assert_eq!(config.failure(), FailurePolicy::Fallback);
/// assert_eq!(config.timeout(), Some(Duration::from_millis(200)));
/// assert_eq!(config.breaker().open_for, Duration::from_secs(1));
///
/// let policy = Policy::fixed_window(5, Duration::from_secs(30)).unwrap();
/// let limiter = config.wrap(Arc::new(ReferenceLimiter::new(policy)));
/// assert_eq!(limiter.check_one(b"k").await.unwrap().remaining, 4);
///
/// let err = toml::from_str::<ResilienceConfig>(r#"timeout = "0s""#).unwrap_err();
/// assert!(err.to_string().contains("invalid `timeout`: must be longer than zero"), "{err}");
/// # });
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ResilienceFile")]
pub struct ResilienceConfig {
    failure: FailurePolicy,
    timeout: Option<Duration>,
    breaker: BreakerOptions,
    deny_cache: Option<NonZeroUsize>,
}

impl ResilienceConfig {
    /// What decides when the store cannot.
    #[must_use]
    pub fn with_failure(mut self, failure: FailurePolicy) -> Self {
        self.failure = failure;
        self
    }

    /// The longest each call to the store may take; `None`: no Timeout
    /// layer (the store's own timeout, if any, is the only one).
    ///
    /// # Errors
    ///
    /// A zero timeout, which would fail every call.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelimit_layers::ResilienceConfig;
    ///
    /// let config = ResilienceConfig::default().with_timeout(Some(Duration::from_millis(50))).unwrap();
    /// assert_eq!(config.timeout(), Some(Duration::from_millis(50)));
    /// assert!(ResilienceConfig::default().with_timeout(Some(Duration::ZERO)).is_err());
    /// ```
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Result<Self, ConfigError> {
        if timeout.is_some_and(|t| t.is_zero()) {
            return Err(zero_timeout());
        }
        self.timeout = timeout;
        Ok(self)
    }

    /// The circuit breaker's thresholds.
    #[must_use]
    pub fn with_breaker(mut self, breaker: BreakerOptions) -> Self {
        self.breaker = breaker;
        self
    }

    /// Entries of the deny cache; `None`: no DenyCache layer.
    #[must_use]
    pub fn with_deny_cache(mut self, entries: Option<NonZeroUsize>) -> Self {
        self.deny_cache = entries;
        self
    }

    /// The failure policy.
    #[must_use]
    pub fn failure(&self) -> FailurePolicy {
        self.failure
    }

    /// The per-call timeout, if any.
    #[must_use]
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The circuit breaker's thresholds.
    #[must_use]
    pub fn breaker(&self) -> BreakerOptions {
        self.breaker
    }

    /// The deny cache's entries, if any.
    #[must_use]
    pub fn deny_cache(&self) -> Option<NonZeroUsize> {
        self.deny_cache
    }

    /// `inner` wrapped in the layers: `Metered(DenyCache(Failover(
    /// CircuitBreaker(Timeout(inner)))))`, the Timeout and the DenyCache
    /// only when configured. [`Fallback`](FailurePolicy::Fallback) asks a
    /// [`MemoryLimiter`](ratelimit_memory::MemoryLimiter) of the same
    /// policy.
    #[must_use]
    pub fn wrap(&self, inner: Arc<dyn Limiter>) -> Arc<dyn Limiter> {
        self.stack(inner, None)
    }

    /// [`wrap`](Self::wrap), with `fallback` as the limiter
    /// [`Fallback`](FailurePolicy::Fallback) asks (it should apply the same
    /// policy).
    #[must_use]
    pub fn wrap_with_fallback(
        &self,
        inner: Arc<dyn Limiter>,
        fallback: Arc<dyn Limiter>,
    ) -> Arc<dyn Limiter> {
        self.stack(inner, Some(fallback))
    }

    fn stack(
        &self,
        inner: Arc<dyn Limiter>,
        fallback: Option<Arc<dyn Limiter>>,
    ) -> Arc<dyn Limiter> {
        // Concrete types all the way down: one branch per set of layers.
        let breaker = self.breaker;
        match self.timeout {
            Some(t) => self.outer(CircuitBreaker::new(timeout(inner, t), breaker), fallback),
            None => self.outer(CircuitBreaker::new(inner, breaker), fallback),
        }
    }

    /// The failover, the deny cache and the metrics around `inner`.
    fn outer<L: Limiter + 'static>(
        &self,
        inner: L,
        fallback: Option<Arc<dyn Limiter>>,
    ) -> Arc<dyn Limiter> {
        let mut failover =
            Failover::new(inner, self.failure).with_retry_after(self.breaker.open_for);
        if let Some(fallback) = fallback {
            failover = failover.with_fallback(fallback);
        }
        match self.deny_cache {
            Some(entries) => Arc::new(Metered::new(DenyCache::new(failover, entries))),
            None => Arc::new(Metered::new(failover)),
        }
    }
}

impl ResilienceConfig {
    /// The same stack over a [`SetLimiter`]:
    /// `Metered(SetFailover(CircuitBreaker(Timeout(store))))`, with
    /// `fallback` deciding under [`FailurePolicy::Fallback`] (an in-process
    /// limiter over the same set). There is no deny cache for sets (see
    /// [`SetFailover`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use ratelimit_core::{NamedLimit, Policy, PolicySet, ReferenceSetLimiter, SetLimiter};
    /// use ratelimit_layers::ResilienceConfig;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let set = PolicySet::new(vec![
    ///     NamedLimit::new("requests", Policy::fixed_window(5, Duration::from_secs(30)).unwrap()).unwrap(),
    /// ]).unwrap();
    /// let config: ResilienceConfig = toml::from_str(r#"failure = "closed"
    /// timeout = "200ms""#).unwrap();
    /// let limiter = config.wrap_set(Arc::new(ReferenceSetLimiter::new(set)), None);
    /// assert!(limiter.check_set(b"k", &[1]).await.unwrap().decision.allowed);
    /// # });
    /// ```
    #[must_use]
    pub fn wrap_set(
        &self,
        inner: Arc<dyn SetLimiter>,
        fallback: Option<Arc<dyn SetLimiter>>,
    ) -> Arc<dyn SetLimiter> {
        let breaker = self.breaker;
        match self.timeout {
            Some(t) => {
                let timed = Timeout::new(inner, t).expect("the config accepts no zero timeout");
                self.outer_set(CircuitBreaker::new(timed, breaker), fallback)
            }
            None => self.outer_set(CircuitBreaker::new(inner, breaker), fallback),
        }
    }

    fn outer_set<L: SetLimiter + 'static>(
        &self,
        inner: L,
        fallback: Option<Arc<dyn SetLimiter>>,
    ) -> Arc<dyn SetLimiter> {
        let mut failover =
            SetFailover::new(inner, self.failure).with_retry_after(self.breaker.open_for);
        if let Some(fallback) = fallback {
            failover = failover.with_fallback(fallback);
        }
        Arc::new(Metered::for_set(failover))
    }
}

fn timeout(inner: Arc<dyn Limiter>, t: Duration) -> Timeout<Arc<dyn Limiter>> {
    Timeout::new(inner, t).expect("the config accepts no zero timeout")
}

fn zero_timeout() -> ConfigError {
    ConfigError::new(
        "timeout",
        "must be longer than zero; leave `timeout` out for no timeout",
    )
}

/// A duration field, with errors naming it.
pub(crate) fn duration(field: &'static str, text: &str) -> Result<Duration, ConfigError> {
    parse_duration(text).map_err(|e| ConfigError::new(field, e.message()))
}

/// The written form of [`ResilienceConfig`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResilienceFile {
    #[serde(default)]
    failure: FailurePolicy,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    breaker: BreakerOptions,
    #[serde(default)]
    deny_cache: Option<usize>,
}

impl TryFrom<ResilienceFile> for ResilienceConfig {
    type Error = ConfigError;

    fn try_from(file: ResilienceFile) -> Result<Self, ConfigError> {
        let timeout = match file.timeout {
            Some(text) => Some(duration("timeout", &text)?),
            None => None,
        };
        let deny_cache = match file.deny_cache {
            Some(n) => Some(NonZeroUsize::new(n).ok_or_else(|| {
                ConfigError::new(
                    "deny_cache",
                    "0 is out of range; expected at least 1 (leave it out for no deny cache)",
                )
            })?),
            None => None,
        };
        Ok(Self::default()
            .with_failure(file.failure)
            .with_timeout(timeout)?
            .with_breaker(file.breaker)
            .with_deny_cache(deny_cache))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ResilienceConfig, String> {
        toml::from_str::<ResilienceConfig>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_closed_with_a_breaker_and_nothing_else() {
        let c = parse("").unwrap();
        assert_eq!(c, ResilienceConfig::default());
        assert_eq!(c.failure(), FailurePolicy::Closed);
        assert_eq!((c.timeout(), c.deny_cache()), (None, None));
        assert_eq!(c.breaker(), BreakerOptions::default());
        let c = parse("failure = \"fail_open\"\ndeny_cache = 10000").unwrap();
        assert_eq!(c.failure(), FailurePolicy::Open);
        assert_eq!(c.deny_cache().map(NonZeroUsize::get), Some(10_000));
    }

    #[test]
    fn errors_name_the_field() {
        for (text, needle) in [
            (
                "timeout = \"0ms\"",
                "invalid `timeout`: must be longer than zero",
            ),
            (
                "timeout = \"200\"",
                "invalid `timeout`: \"200\" is missing a unit",
            ),
            ("deny_cache = 0", "invalid `deny_cache`: 0 is out of range"),
            ("failure = \"maybe\"", "unknown variant `maybe`"),
            (
                "breaker = { failure_threshold = 0 }",
                "invalid `breaker.failure_threshold`",
            ),
            ("retries = 2", "unknown field `retries`"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
