//! Give up on a call after a duration.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use ratelimit_core::{ConfigError, Decision, Error, Limiter, Policy};

/// A [`Limiter`] whose every call (check, peek, reset) gives up after a
/// duration with `Err` of kind [`Timeout`](ratelimit_core::ErrorKind::Timeout).
///
/// Giving up drops the inner call's future: whatever it had already sent to
/// a store may still be applied there (a frozen Redis that thaws runs the
/// script it had read), so a timed-out check may have taken its cost.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::{Limiter, Policy, ReferenceLimiter};
/// use ratelimit_layers::Timeout;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let policy = Policy::fixed_window(5, Duration::from_secs(30)).unwrap();
/// let limiter = Timeout::new(ReferenceLimiter::new(policy), Duration::from_millis(200)).unwrap();
/// assert_eq!(limiter.timeout(), Duration::from_millis(200));
/// assert_eq!(limiter.check_one(b"k").await.unwrap().remaining, 4);
///
/// let err = Timeout::new(ReferenceLimiter::new(policy), Duration::ZERO).unwrap_err();
/// assert_eq!(err.field(), "timeout");
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Timeout<L> {
    inner: L,
    timeout: Duration,
}

impl<L> Timeout<L> {
    /// `inner`, each of whose calls gives up after `timeout`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] on field `timeout` when `timeout` is zero: every
    /// call would fail.
    pub fn new(inner: L, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() {
            return Err(ConfigError::new(
                "timeout",
                "must be longer than zero; every call would time out (leave it out for no timeout)",
            ));
        }
        Ok(Self { inner, timeout })
    }

    /// The longest a call waits.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The wrapped limiter.
    #[must_use]
    pub fn inner(&self) -> &L {
        &self.inner
    }

    pub(crate) async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::timeout(Some(Box::new(Elapsed(self.timeout))))),
        }
    }
}

/// The cause of a timeout: how long was waited.
#[derive(Debug, Clone, Copy)]
struct Elapsed(Duration);

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no answer within {:?}", self.0)
    }
}

impl std::error::Error for Elapsed {}

#[async_trait]
impl<L: Limiter> Limiter for Timeout<L> {
    async fn check(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
        self.bounded(self.inner.check(key, cost)).await
    }

    /// The inner limiter's answer at once: an answer that takes no wait
    /// cannot time out.
    fn check_now(&self, key: &[u8], cost: u64) -> Option<Result<Decision, Error>> {
        self.inner.check_now(key, cost)
    }

    async fn peek(&self, key: &[u8]) -> Result<Decision, Error> {
        self.bounded(self.inner.peek(key)).await
    }

    async fn reset(&self, key: &[u8]) -> Result<(), Error> {
        self.bounded(self.inner.reset(key)).await
    }

    fn policies(&self) -> &[Policy] {
        self.inner.policies()
    }
}
