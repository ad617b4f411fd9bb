//! The pure policies over an in-process map: the model every backend must
//! agree with.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::{Algorithm, Clock, Decision, Error, Limiter, Policy, PolicyState, SystemClock};

/// The reference [`Limiter`]: [`Policy`] applied to a `HashMap` behind a
/// mutex.
///
/// Simple on purpose: it is the oracle of the conformance and differential
/// tests, not a production backend (its memory grows with the keys seen
/// until [`purge_idle`](Self::purge_idle) is called).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::{Limiter, ManualClock, Policy, ReferenceLimiter};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let clock = ManualClock::new(0);
/// let policy = Policy::fixed_window(2, Duration::from_secs(1)).unwrap();
/// let limiter = ReferenceLimiter::with_clock(policy, clock.clone());
///
/// assert!(limiter.check(b"k", 2).await.unwrap().allowed);
/// assert!(!limiter.check_one(b"k").await.unwrap().allowed);
/// clock.advance(Duration::from_secs(1));
/// assert!(limiter.check_one(b"k").await.unwrap().allowed);
/// # });
/// ```
pub struct ReferenceLimiter {
    policy: Policy,
    clock: Arc<dyn Clock>,
    keys: Mutex<HashMap<Box<[u8]>, PolicyState>>,
}

impl ReferenceLimiter {
    /// A limiter on the [`SystemClock`].
    #[must_use]
    pub fn new(policy: Policy) -> Self {
        Self::with_clock(policy, SystemClock::new())
    }

    /// A limiter on the given clock.
    #[must_use]
    pub fn with_clock(policy: Policy, clock: impl Clock + 'static) -> Self {
        Self {
            policy,
            clock: Arc::new(clock),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The synchronous form of [`Limiter::check`].
    ///
    /// # Errors
    ///
    /// As [`Algorithm::check`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{Policy, ReferenceLimiter};
    /// let limiter = ReferenceLimiter::new(Policy::fixed_window(1, Duration::from_secs(60)).unwrap());
    /// assert!(limiter.check_sync(b"k", 1).unwrap().allowed);
    /// assert!(!limiter.check_sync(b"k", 1).unwrap().allowed);
    /// ```
    pub fn check_sync(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
        let now = self.clock.now_micros();
        let mut keys = self.keys();
        let state = keys.get(key).copied().unwrap_or_default();
        let (decision, next) = self.policy.check(&state, now, cost)?;
        if decision.allowed {
            keys.insert(key.into(), next);
        }
        Ok(decision)
    }

    /// The synchronous form of [`Limiter::peek`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{Policy, ReferenceLimiter};
    /// let limiter = ReferenceLimiter::new(Policy::fixed_window(3, Duration::from_secs(60)).unwrap());
    /// assert_eq!(limiter.peek_sync(b"k").remaining, 3);
    /// ```
    #[must_use]
    pub fn peek_sync(&self, key: &[u8]) -> Decision {
        let now = self.clock.now_micros();
        let state = self.keys().get(key).copied().unwrap_or_default();
        self.policy.peek(&state, now)
    }

    /// The synchronous form of [`Limiter::reset`].
    pub fn reset_sync(&self, key: &[u8]) {
        self.keys().remove(key);
    }

    /// The number of keys stored.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys().len()
    }

    /// Whether no key is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys().is_empty()
    }

    /// Forgets every key whose state is equivalent to a key never seen;
    /// returns how many were forgotten. No later decision changes.
    pub fn purge_idle(&self) -> usize {
        let now = self.clock.now_micros();
        let mut keys = self.keys();
        let before = keys.len();
        keys.retain(|_, state| !self.policy.is_idle(state, now));
        before - keys.len()
    }

    fn keys(&self) -> MutexGuard<'_, HashMap<Box<[u8]>, PolicyState>> {
        // The map is consistent after every statement, so a panic elsewhere
        // while holding the lock cannot leave it half-updated.
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for ReferenceLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReferenceLimiter")
            .field("policy", &self.policy)
            .field("clock", &self.clock)
            .field("keys", &self.len())
            .finish()
    }
}

#[async_trait]
impl Limiter for ReferenceLimiter {
    async fn check(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
        self.check_sync(key, cost)
    }

    fn check_now(&self, key: &[u8], cost: u64) -> Option<Result<Decision, Error>> {
        Some(self.check_sync(key, cost))
    }

    async fn peek(&self, key: &[u8]) -> Result<Decision, Error> {
        Ok(self.peek_sync(key))
    }

    async fn reset(&self, key: &[u8]) -> Result<(), Error> {
        self.reset_sync(key);
        Ok(())
    }

    fn policies(&self) -> &[Policy] {
        std::slice::from_ref(&self.policy)
    }
}
