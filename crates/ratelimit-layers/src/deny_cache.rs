//! Repeat a recent denial locally instead of asking the store again.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;

use async_trait::async_trait;
use ratelimit_core::{Clock, Decision, Error, Limiter, Policy, SystemClock};

use crate::deny_entries::DenyEntries;

/// A [`Limiter`] that remembers the inner limiter's recent denials (up to
/// a bounded number of keys) and repeats them, with no call to the store,
/// until their `retry_after` has passed.
///
/// It only ever denies, and only what the store denied: a cached denial of
/// cost `c` is repeated for cost `c` only (another cost goes to the store,
/// which knows its wait). The wait is measured on this layer's [`Clock`]
/// from when the store's answer arrived, so it ends no earlier than the
/// store's own; `retry_after` and `reset_after` are counted down, exactly
/// as the store would while nothing else arrives. `remaining` stays the
/// one of the store's denial: a token bucket or a sliding window may have
/// won back some units meanwhile (not enough for `c`), which is the price
/// of not asking. An admission or a reset of the key forgets its denial;
/// peeks always go to the inner limiter. Keys above 1 KiB are not cached.
///
/// Useful in front of a remote store hammered by clients that ignore
/// `Retry-After`: their repeated requests cost no round trip.
///
/// # Examples
///
/// ```
/// use std::num::NonZeroUsize;
/// use std::time::Duration;
/// use ratelimit_core::{Limiter, ManualClock, Policy, ReferenceLimiter};
/// use ratelimit_layers::DenyCache;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let clock = ManualClock::new(0);
/// let policy = Policy::fixed_window(1, Duration::from_secs(10)).unwrap();
/// let limiter = DenyCache::new(
///     ReferenceLimiter::with_clock(policy, clock.clone()),
///     NonZeroUsize::new(10_000).unwrap(),
/// )
/// .with_clock(clock.clone());
///
/// assert!(limiter.check_one(b"k").await.unwrap().allowed);
/// assert!(!limiter.check_one(b"k").await.unwrap().allowed); // from the store
/// assert_eq!(limiter.cached(), 1);
/// clock.advance(Duration::from_secs(4));
/// let repeated = limiter.check_one(b"k").await.unwrap(); // from the cache
/// assert_eq!(repeated.retry_after, Some(Duration::from_secs(6)));
/// clock.advance(Duration::from_secs(6));
/// assert!(limiter.check_one(b"k").await.unwrap().allowed);
/// # });
/// ```
pub struct DenyCache<L> {
    inner: L,
    entries: DenyEntries,
    clock: Arc<dyn Clock>,
}

impl<L: Limiter> DenyCache<L> {
    /// `inner`, with up to `entries` keys' denials remembered, on the
    /// [`SystemClock`].
    pub fn new(inner: L, entries: NonZeroUsize) -> Self {
        Self {
            inner,
            entries: DenyEntries::new(entries.get()),
            clock: Arc::new(SystemClock::new()),
        }
    }

    /// Measures waits on `clock` instead (tests, simulations; the inner
    /// limiter's clock when it has an injected one).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How many keys' denials are cached now.
    #[must_use]
    pub fn cached(&self) -> usize {
        self.entries.len()
    }

    /// The wrapped limiter.
    #[must_use]
    pub fn inner(&self) -> &L {
        &self.inner
    }
}

impl<L> DenyCache<L> {
    /// Remembers the inner limiter's `decision` for `key` at `cost`.
    fn remembered(&self, key: &[u8], cost: u64, decision: Decision) -> Decision {
        // A degraded decision describes no quota of the store: never repeat it.
        if !decision.is_degraded() {
            // Read after the answer arrived: the wait starts no earlier
            // than the store's.
            let now = self.clock.now_micros();
            self.entries.record(key, cost, now, &decision);
        }
        decision
    }
}

#[async_trait]
impl<L: Limiter> Limiter for DenyCache<L> {
    async fn check(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
        if let Some(denied) = self.entries.lookup(key, cost, self.clock.now_micros()) {
            return Ok(denied);
        }
        let decision = self.inner.check(key, cost).await?;
        Ok(self.remembered(key, cost, decision))
    }

    /// A cached denial, or the inner limiter's answer when it has one at
    /// once, remembered as [`check`](Self::check) remembers it. `None`
    /// when the inner limiter must be awaited: the lookup it made changed
    /// nothing but dropping an expired denial, which the awaited check
    /// would drop as well.
    fn check_now(&self, key: &[u8], cost: u64) -> Option<Result<Decision, Error>> {
        if let Some(denied) = self.entries.lookup(key, cost, self.clock.now_micros()) {
            return Some(Ok(denied));
        }
        Some(
            self.inner
                .check_now(key, cost)?
                .map(|decision| self.remembered(key, cost, decision)),
        )
    }

    async fn peek(&self, key: &[u8]) -> Result<Decision, Error> {
        self.inner.peek(key).await
    }

    async fn reset(&self, key: &[u8]) -> Result<(), Error> {
        self.entries.forget(key);
        self.inner.reset(key).await
    }

    fn policies(&self) -> &[Policy] {
        self.inner.policies()
    }
}

impl<L: fmt::Debug> fmt::Debug for DenyCache<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DenyCache")
            .field("inner", &self.inner)
            .field("cached", &self.entries.len())
            .field("clock", &self.clock)
            .finish()
    }
}
