//! The in-process keyed limiter.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use ratelimit_core::{Clock, Decision, Error, Limiter, Policy, SystemClock};

use crate::fingerprint::Keyer;
use crate::meters::Meters;
use crate::store::Store;
use crate::MemoryLimiterOptions;

/// An in-process keyed [`Limiter`] for any [`Policy`], with bounded memory.
///
/// Decisions are those of the policy's pure functions in `ratelimit-core`,
/// field for field the same as [`ReferenceLimiter`](ratelimit_core::ReferenceLimiter)'s.
/// Keys of 8 bytes and of up to 11 are stored as they are, longer ones as
/// keyed 95-bit fingerprints, in a sharded table, so a key costs at most
/// 12 bytes whatever its length; keys whose state is back to
/// "never seen" are forgotten a few at a time as part of normal calls; and
/// [`MemoryLimiterOptions::max_keys`] caps the table.
///
/// Cloning is cheap and clones share their keys. The async [`Limiter`]
/// methods never wait; the `*_sync` methods are the same calls for sync
/// code.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::{ManualClock, Policy};
/// use ratelimit_memory::MemoryLimiter;
///
/// let clock = ManualClock::new(0);
/// let policy = Policy::fixed_window(2, Duration::from_secs(1)).unwrap();
/// let limiter = MemoryLimiter::with_clock(policy, clock.clone());
///
/// assert!(limiter.check_sync(b"client-a", 2).unwrap().allowed);
/// let denied = limiter.check_sync(b"client-a", 1).unwrap();
/// assert!(!denied.allowed);
/// assert_eq!(denied.retry_after, Some(Duration::from_secs(1)));
/// assert!(limiter.check_sync(b"client-b", 1).unwrap().allowed);
///
/// clock.advance(Duration::from_secs(1));
/// assert!(limiter.check_sync(b"client-a", 1).unwrap().allowed);
/// ```
pub struct MemoryLimiter<C = SystemClock> {
    inner: Arc<Inner<C>>,
}

struct Inner<C> {
    policy: Policy,
    clock: C,
    keyer: Keyer,
    store: Store,
}

impl MemoryLimiter<SystemClock> {
    /// A limiter on the [`SystemClock`] with default options.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::Policy;
    /// # use ratelimit_memory::MemoryLimiter;
    /// let limiter = MemoryLimiter::new(Policy::token_bucket(10, 1, Duration::from_secs(1)).unwrap());
    /// assert_eq!(limiter.check_sync(b"k", 4).unwrap().remaining, 6);
    /// ```
    #[must_use]
    pub fn new(policy: Policy) -> Self {
        Self::with_clock(policy, SystemClock::new())
    }
}

impl<C: Clock> MemoryLimiter<C> {
    /// A limiter on `clock` with default options.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{ManualClock, Policy};
    /// # use ratelimit_memory::MemoryLimiter;
    /// let policy = Policy::sliding_window(3, Duration::from_secs(10)).unwrap();
    /// let limiter = MemoryLimiter::with_clock(policy, ManualClock::new(0));
    /// assert_eq!(limiter.check_sync(b"k", 1).unwrap().remaining, 2);
    /// ```
    #[must_use]
    pub fn with_clock(policy: Policy, clock: C) -> Self {
        Self::with_options(policy, clock, MemoryLimiterOptions::default())
    }

    /// A limiter on `clock` with `options`.
    ///
    /// Its metrics (see the crate's README) are registered here, with the
    /// `metrics` recorder in effect now: install the recorder first.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use std::time::Duration;
    /// use ratelimit_core::{ManualClock, Policy};
    /// use ratelimit_memory::{MemoryLimiter, MemoryLimiterOptions, WhenFull};
    ///
    /// let options = MemoryLimiterOptions::default()
    ///     .with_max_keys(NonZeroUsize::new(1).unwrap())
    ///     .with_when_full(WhenFull::DenyNewKeys);
    /// let policy = Policy::fixed_window(5, Duration::from_secs(30)).unwrap();
    /// let limiter = MemoryLimiter::with_options(policy, ManualClock::new(0), options);
    ///
    /// assert!(limiter.check_sync(b"first", 1).unwrap().allowed);
    /// let refused = limiter.check_sync(b"second", 1).unwrap();
    /// assert!(!refused.allowed, "the only slot holds a live counter");
    /// assert_eq!(refused.retry_after, Some(Duration::from_secs(30)));
    /// assert!(limiter.check_sync(b"first", 1).unwrap().allowed, "stored keys are unaffected");
    /// ```
    #[must_use]
    pub fn with_options(policy: Policy, clock: C, options: MemoryLimiterOptions) -> Self {
        let meters = Meters::register(policy.algorithm_name(), options.name());
        Self {
            inner: Arc::new(Inner {
                policy,
                clock,
                keyer: Keyer::new(),
                store: Store::new(policy, &options, meters),
            }),
        }
    }

    /// The synchronous form of [`Limiter::check`].
    ///
    /// # Errors
    ///
    /// When `cost` is zero or above the policy's limit; nothing changes.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{ManualClock, Policy};
    /// # use ratelimit_memory::MemoryLimiter;
    /// let policy = Policy::token_bucket(3, 1, Duration::from_secs(1)).unwrap();
    /// let limiter = MemoryLimiter::with_clock(policy, ManualClock::new(0));
    /// assert!(limiter.check_sync(b"k", 3).unwrap().allowed);
    /// assert!(!limiter.check_sync(b"k", 1).unwrap().allowed);
    /// assert!(limiter.check_sync(b"k", 4).unwrap_err().is_cost_rejected());
    /// ```
    #[inline]
    pub fn check_sync(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
        let inner = &*self.inner;
        let fp = inner.keyer.fingerprint(key);
        inner.store.check(fp, inner.clock.now_micros(), cost)
    }

    /// The synchronous form of [`Limiter::peek`]: the decision a check of
    /// cost 1 would see, taking nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{ManualClock, Policy};
    /// # use ratelimit_memory::MemoryLimiter;
    /// let policy = Policy::fixed_window(3, Duration::from_secs(60)).unwrap();
    /// let limiter = MemoryLimiter::with_clock(policy, ManualClock::new(0));
    /// limiter.check_sync(b"k", 2).unwrap();
    /// assert_eq!(limiter.peek_sync(b"k").remaining, 1);
    /// assert_eq!(limiter.peek_sync(b"other").remaining, 3);
    /// ```
    #[must_use]
    #[inline]
    pub fn peek_sync(&self, key: &[u8]) -> Decision {
        let inner = &*self.inner;
        let fp = inner.keyer.fingerprint(key);
        inner.store.peek(fp, inner.clock.now_micros())
    }

    /// The synchronous form of [`Limiter::reset`]: forgets `key`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{ManualClock, Policy};
    /// # use ratelimit_memory::MemoryLimiter;
    /// let policy = Policy::fixed_window(1, Duration::from_secs(60)).unwrap();
    /// let limiter = MemoryLimiter::with_clock(policy, ManualClock::new(0));
    /// limiter.check_sync(b"k", 1).unwrap();
    /// limiter.reset_sync(b"k");
    /// assert!(limiter.check_sync(b"k", 1).unwrap().allowed);
    /// assert_eq!(limiter.len(), 1);
    /// ```
    pub fn reset_sync(&self, key: &[u8]) {
        let inner = &*self.inner;
        inner.store.reset(inner.keyer.fingerprint(key));
    }

    /// Forgets, shard by shard, every key that may be forgotten now, and
    /// returns how many. Never needed — idle keys are forgotten during
    /// normal calls — but useful before measuring or after a burst of
    /// traffic. Holds one shard lock at a time, never the whole table.
    /// Counts the keys in `ratelimit_memory_keys_reclaimed_total` and then
    /// records the keys held, as [`record_len`](Self::record_len) does.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{ManualClock, Policy};
    /// # use ratelimit_memory::MemoryLimiter;
    /// let clock = ManualClock::new(0);
    /// let policy = Policy::fixed_window(5, Duration::from_secs(1)).unwrap();
    /// let limiter = MemoryLimiter::with_clock(policy, clock.clone());
    /// limiter.check_sync(b"a", 1).unwrap();
    /// limiter.check_sync(b"b", 1).unwrap();
    /// assert_eq!(limiter.purge_idle(), 0, "both windows are still open");
    /// clock.advance(Duration::from_secs(1));
    /// assert_eq!(limiter.purge_idle(), 2);
    /// assert!(limiter.is_empty());
    /// ```
    pub fn purge_idle(&self) -> usize {
        let inner = &*self.inner;
        let forgotten = inner.store.purge(inner.clock.now_micros());
        self.record_len();
        forgotten
    }

    /// Reads the number of keys held, as [`len`](Self::len) does, records
    /// it as the `ratelimit_memory_keys` gauge, and returns it.
    ///
    /// The gauge is set only here and by [`purge_idle`](Self::purge_idle),
    /// never by a check: a total needs every shard's lock, and keeping one
    /// up to date would put a shared write on the path of every new key.
    /// Call it where metrics are exported (before a scrape, or from a
    /// periodic task). Takes each shard's lock in turn, briefly.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    /// # use ratelimit_core::{ManualClock, Policy};
    /// # use ratelimit_memory::MemoryLimiter;
    /// let recorder = DebuggingRecorder::new();
    /// let snapshotter = recorder.snapshotter();
    /// let policy = Policy::fixed_window(5, Duration::from_secs(1)).unwrap();
    /// // Handles are registered when the limiter is built.
    /// let limiter = metrics::with_local_recorder(&recorder, || {
    ///     MemoryLimiter::with_clock(policy, ManualClock::new(0))
    /// });
    /// limiter.check_sync(b"a", 1).unwrap();
    /// limiter.check_sync(b"b", 1).unwrap();
    /// assert_eq!(limiter.record_len(), 2);
    ///
    /// let gauge = snapshotter.snapshot().into_vec().into_iter()
    ///     .find(|(key, ..)| key.key().name() == "ratelimit_memory_keys")
    ///     .map(|(.., value)| value);
    /// assert_eq!(gauge, Some(DebugValue::Gauge(2.0.into())));
    /// ```
    pub fn record_len(&self) -> usize {
        let held = self.len();
        // Exact below 2^53 keys, far beyond what memory holds.
        self.inner.store.meters().keys.set(held as f64);
        held
    }

    /// The number of keys stored (summed shard by shard, so only exact
    /// when no other thread is calling).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{ManualClock, Policy};
    /// # use ratelimit_memory::MemoryLimiter;
    /// let policy = Policy::fixed_window(5, Duration::from_secs(1)).unwrap();
    /// let limiter = MemoryLimiter::with_clock(policy, ManualClock::new(0));
    /// limiter.check_sync(b"a", 1).unwrap();
    /// limiter.peek_sync(b"b");
    /// assert_eq!(limiter.len(), 1, "peeks store nothing");
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.store.len()
    }

    /// Whether no key is stored.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{ManualClock, Policy};
    /// # use ratelimit_memory::MemoryLimiter;
    /// let policy = Policy::fixed_window(5, Duration::from_secs(1)).unwrap();
    /// assert!(MemoryLimiter::with_clock(policy, ManualClock::new(0)).is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the key tables (not counting this handle), for
    /// capacity planning and the memory tests.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{ManualClock, Policy};
    /// # use ratelimit_memory::MemoryLimiter;
    /// let policy = Policy::token_bucket(5, 1, Duration::from_secs(1)).unwrap();
    /// let limiter = MemoryLimiter::with_clock(policy, ManualClock::new(0));
    /// let empty = limiter.allocated_bytes();
    /// for i in 0..10_000u32 {
    ///     limiter.check_sync(&i.to_le_bytes(), 1).unwrap();
    /// }
    /// // 20 bytes per token-bucket entry of a 4-byte key, in tables at
    /// // most 7/8 full that grow by doubling.
    /// assert!(limiter.allocated_bytes() >= empty + 10_000 * 24);
    /// ```
    #[must_use]
    pub fn allocated_bytes(&self) -> usize {
        self.inner.store.allocation_size()
    }

    /// The policy applied to every key.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::Policy;
    /// # use ratelimit_memory::MemoryLimiter;
    /// let policy = Policy::fixed_window(5, Duration::from_secs(1)).unwrap();
    /// assert_eq!(MemoryLimiter::new(policy).policy(), &policy);
    /// ```
    #[must_use]
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }
}

impl<C> Clone for MemoryLimiter<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: Clock> fmt::Debug for MemoryLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLimiter")
            .field("policy", &self.inner.policy)
            .field("clock", &self.inner.clock)
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<C: Clock + 'static> Limiter for MemoryLimiter<C> {
    async fn check(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
        self.check_sync(key, cost)
    }

    #[inline]
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
        std::slice::from_ref(&self.inner.policy)
    }
}
