//! The in-process [`SetLimiter`]: policy sets, settling and leases.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use ratelimit_core::{
    Clock, Error, LeaseId, Limit, PolicySet, Receipt, SetCheck, SetDecision, SetLimiter,
    SystemClock,
};

use crate::fingerprint::Keyer;
use crate::meters::Meters;
use crate::set_store::{SetRules, SetStore, SetView};
use crate::MemorySetLimiterOptions;

/// An in-process [`SetLimiter`]: several named policies checked all or
/// nothing per key, receipts settled later, concurrency leases (`SPEC.md`
/// section 5), with bounded memory.
///
/// Decisions and receipts are those of [`PolicySet`]'s pure functions,
/// field for field the same as
/// [`ReferenceSetLimiter`](ratelimit_core::ReferenceSetLimiter)'s (lease ids
/// included: a counter from 1). Keys are stored as the single-policy
/// [`MemoryLimiter`](crate::MemoryLimiter) stores them (short keys as they
/// are, long ones as keyed 95-bit fingerprints) in a sharded map, each
/// key's state updated in place under its shard's lock. Keys whose state is
/// back to "never seen" are forgotten as the map grows;
/// [`MemorySetLimiterOptions::with_max_keys`] caps it, and a new key that
/// meets a full shard is denied. A key holding a live lease is never
/// forgotten.
///
/// [`release`](SetLimiter::release) (what dropping a
/// [`Reservation`](ratelimit_core::Reservation) does) frees the leases at
/// once, synchronously. Cloning is cheap and clones share their keys.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::{Concurrency, ManualClock, NamedLimit, Policy, PolicySet};
/// use ratelimit_memory::MemorySetLimiter;
///
/// let minute = Duration::from_secs(60);
/// let set = PolicySet::new(vec![
///     NamedLimit::new("requests", Policy::fixed_window(10, minute).unwrap()).unwrap(),
///     NamedLimit::new("tokens", Policy::sliding_window(1_000, minute).unwrap())
///         .unwrap()
///         .settling(),
///     NamedLimit::new("streams", Concurrency::new(1, minute).unwrap()).unwrap(),
/// ]).unwrap();
/// let limiter = MemorySetLimiter::with_clock(set, ManualClock::new(0));
///
/// let check = limiter.check_set_sync(b"user:42", &[1, 600, 1]).unwrap();
/// assert!(check.decision.allowed);
/// assert_eq!(limiter.leases_held(b"user:42"), 1);
/// // A second stream waits for the first.
/// assert!(!limiter.check_set_sync(b"user:42", &[1, 100, 1]).unwrap().decision.allowed);
///
/// // The stream used 250 tokens: 350 come back and the lease is released.
/// let after = limiter.settle_sync(check.receipt.unwrap(), &[1, 250, 0]).unwrap();
/// assert_eq!(after.decisions[1].remaining, 750);
/// assert_eq!(limiter.leases_held(b"user:42"), 0);
/// ```
pub struct MemorySetLimiter<C = SystemClock> {
    inner: Arc<Inner<C>>,
    view: SetView,
}

struct Inner<C> {
    clock: C,
    keyer: Keyer,
    store: SetStore,
    next_lease: AtomicU64,
}

impl MemorySetLimiter<SystemClock> {
    /// A limiter on the [`SystemClock`] with default options.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{Policy, PolicySet};
    /// # use ratelimit_memory::MemorySetLimiter;
    /// let set = PolicySet::single(Policy::fixed_window(5, Duration::from_secs(1)).unwrap());
    /// let limiter = MemorySetLimiter::new(set);
    /// assert_eq!(limiter.check_set_sync(b"k", &[2]).unwrap().decision.decisions[0].remaining, 3);
    /// ```
    #[must_use]
    pub fn new(set: PolicySet) -> Self {
        Self::with_clock(set, SystemClock::new())
    }
}

impl<C: Clock> MemorySetLimiter<C> {
    /// A limiter on `clock` with default options.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{ManualClock, Policy, PolicySet};
    /// # use ratelimit_memory::MemorySetLimiter;
    /// let set = PolicySet::single(Policy::sliding_window(3, Duration::from_secs(10)).unwrap());
    /// let limiter = MemorySetLimiter::with_clock(set, ManualClock::new(0));
    /// assert!(limiter.check_set_sync(b"k", &[3]).unwrap().decision.allowed);
    /// assert!(!limiter.check_set_sync(b"k", &[1]).unwrap().decision.allowed);
    /// ```
    #[must_use]
    pub fn with_clock(set: PolicySet, clock: C) -> Self {
        Self::with_options(set, clock, MemorySetLimiterOptions::default())
    }

    /// A limiter on `clock` with `options`. Its metrics (those of the
    /// crate's README, labelled `policy = "set"`) are registered here.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use std::time::Duration;
    /// use ratelimit_core::{ManualClock, Policy, PolicySet};
    /// use ratelimit_memory::{MemorySetLimiter, MemorySetLimiterOptions};
    ///
    /// let options = MemorySetLimiterOptions::default().with_max_keys(NonZeroUsize::MIN);
    /// let set = PolicySet::single(Policy::fixed_window(5, Duration::from_secs(30)).unwrap());
    /// let limiter = MemorySetLimiter::with_options(set, ManualClock::new(0), options);
    ///
    /// assert!(limiter.check_set_sync(b"first", &[1]).unwrap().decision.allowed);
    /// let refused = limiter.check_set_sync(b"second", &[1]).unwrap();
    /// assert!(!refused.decision.allowed, "the only slot holds a live counter");
    /// assert_eq!(refused.decision.retry_after, Some(Duration::from_secs(30)));
    /// ```
    #[must_use]
    pub fn with_options(set: PolicySet, clock: C, options: MemorySetLimiterOptions) -> Self {
        let shards = options.shard_count();
        let rules = SetRules {
            cap: options
                .max_keys()
                .map_or(usize::MAX, |keys| (keys / shards).max(1)),
            grace_us: u64::try_from(options.idle_grace().as_micros()).unwrap_or(u64::MAX),
            meters: Meters::register("set", options.name()),
        };
        let store = SetStore::new(rules, shards);
        let view = store.view(set);
        Self {
            inner: Arc::new(Inner {
                clock,
                keyer: Keyer::new(),
                store,
                next_lease: AtomicU64::new(1),
            }),
            view,
        }
    }

    /// A limiter applying `set` to this limiter's keys: both share one
    /// store (the keys, the clock, the lease ids), so a configuration
    /// change resets no one's counters and leaks no lease.
    ///
    /// Each key's state is realigned with the set of the limiter using it,
    /// policy by policy by name: a policy keeps the state of the policy of
    /// the same name if it can mean the same there, and starts empty
    /// otherwise. Kept: a rate policy's count when its algorithm and (for a
    /// window) its window are the same, whatever its new limit (a count
    /// above a lowered limit is denied until it drains); a token bucket's
    /// tokens in use, whatever its new capacity and rate (the time its
    /// state is ahead of now rescaled to the new rate); a concurrency
    /// policy's leases, whatever its new limit or TTL (each keeps its
    /// expiry). A policy of a new name, a new algorithm or a new window
    /// starts empty.
    ///
    /// Both limiters keep working: receipts are settled, renewed and
    /// released by the limiter that issued them, on the key's state
    /// realigned back with its set. A policy only one of the two sets has
    /// is forgotten by such a round trip, so drop the old limiter once its
    /// receipts are done. An equal set shares the limiter's alignment.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelimit_core::{Concurrency, ManualClock, NamedLimit, Policy, PolicySet, SetLimiter};
    /// use ratelimit_memory::MemorySetLimiter;
    ///
    /// let minute = Duration::from_secs(60);
    /// let set = |requests: u64, streams: u64| PolicySet::new(vec![
    ///     NamedLimit::new("requests", Policy::fixed_window(requests, minute).unwrap()).unwrap(),
    ///     NamedLimit::new("streams", Concurrency::new(streams, minute).unwrap()).unwrap(),
    /// ]).unwrap();
    /// let old = MemorySetLimiter::with_clock(set(5, 1), ManualClock::new(0));
    /// let stream = old.check_set_sync(b"k", &[1, 1]).unwrap().receipt.unwrap();
    ///
    /// // The limits change: the count and the lease held are kept.
    /// let new = old.reconfigured(set(10, 2));
    /// let after = new.peek_set_sync(b"k");
    /// assert_eq!(after.decisions[0].remaining, 9);
    /// assert_eq!(new.leases_held(b"k"), 1);
    ///
    /// // The old limiter's receipt still frees its lease.
    /// old.release(stream);
    /// assert_eq!(new.leases_held(b"k"), 0);
    /// ```
    #[must_use]
    pub fn reconfigured(&self, set: PolicySet) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            view: self.inner.store.view(set),
        }
    }

    /// The synchronous form of [`SetLimiter::check_set`].
    ///
    /// # Errors
    ///
    /// As [`PolicySet::check`]: when the costs do not match the set,
    /// naming the policy; nothing changes.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{ManualClock, Policy, PolicySet};
    /// # use ratelimit_memory::MemorySetLimiter;
    /// let set = PolicySet::single(Policy::token_bucket(3, 1, Duration::from_secs(1)).unwrap());
    /// let limiter = MemorySetLimiter::with_clock(set, ManualClock::new(0));
    /// assert!(limiter.check_set_sync(b"k", &[3]).unwrap().receipt.is_some());
    /// assert!(limiter.check_set_sync(b"k", &[4]).unwrap_err().is_cost_rejected());
    /// ```
    // Always inlined, the store's check with it: the answer (~460 bytes)
    // is then written field by field where the caller keeps it. Returned
    // through a call, it was written to the call's slot and copied again
    // by the caller moving it on (`unwrap`), a `memcpy` reading back, in
    // wide loads, fields just written (a store-forwarding stall): a
    // quarter of a set of one's check.
    #[inline(always)]
    pub fn check_set_sync(&self, key: &[u8], costs: &[u64]) -> Result<SetCheck, Error> {
        let inner = &*self.inner;
        let fp = inner.keyer.fingerprint(key);
        let now = inner.clock.now_micros();
        let mut new_lease =
            || LeaseId::new(u128::from(inner.next_lease.fetch_add(1, Ordering::Relaxed)));
        inner
            .store
            .check(&self.view, fp, key, now, costs, &mut new_lease)
    }

    /// The synchronous form of [`SetLimiter::settle`].
    ///
    /// # Errors
    ///
    /// As [`PolicySet::settle`]: when the receipt or amounts do not fit the
    /// set, or an overshoot would leave the exact domain (the leases are
    /// released all the same).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{ManualClock, NamedLimit, Policy, PolicySet};
    /// # use ratelimit_memory::MemorySetLimiter;
    /// let tokens = Policy::token_bucket(100, 100, Duration::from_secs(60)).unwrap();
    /// let set = PolicySet::new(vec![NamedLimit::new("tokens", tokens).unwrap().settling()]).unwrap();
    /// let limiter = MemorySetLimiter::with_clock(set, ManualClock::new(0));
    /// let check = limiter.check_set_sync(b"k", &[100]).unwrap();
    /// let after = limiter.settle_sync(check.receipt.unwrap(), &[40]).unwrap();
    /// assert_eq!(after.decisions[0].remaining, 60);
    /// ```
    pub fn settle_sync(&self, receipt: Receipt, actual: &[u64]) -> Result<SetDecision, Error> {
        let inner = &*self.inner;
        let fp = inner.keyer.fingerprint(receipt.key());
        let now = inner.clock.now_micros();
        inner
            .store
            .settle(&self.view, fp, now, receipt.parts(), actual)
    }

    /// The synchronous form of [`SetLimiter::renew`]: true when every lease
    /// of the receipt was still held (now renewed), false when one was
    /// lost.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{Concurrency, ManualClock, NamedLimit, PolicySet};
    /// # use ratelimit_memory::MemorySetLimiter;
    /// let clock = ManualClock::new(0);
    /// let streams = Concurrency::new(1, Duration::from_secs(30)).unwrap();
    /// let set = PolicySet::new(vec![NamedLimit::new("streams", streams).unwrap()]).unwrap();
    /// let limiter = MemorySetLimiter::with_clock(set, clock.clone());
    /// let mut receipt = limiter.check_set_sync(b"k", &[1]).unwrap().receipt.unwrap();
    /// clock.advance(Duration::from_secs(20));
    /// assert!(limiter.renew_sync(&mut receipt));
    /// clock.advance(Duration::from_secs(31));
    /// assert!(!limiter.renew_sync(&mut receipt), "expired: lost");
    /// ```
    pub fn renew_sync(&self, receipt: &mut Receipt) -> bool {
        let inner = &*self.inner;
        let fp = inner.keyer.fingerprint(receipt.key());
        let now = inner.clock.now_micros();
        inner.store.renew(&self.view, fp, now, receipt.parts_mut())
    }

    /// The synchronous form of [`SetLimiter::peek_set`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{ManualClock, Policy, PolicySet};
    /// # use ratelimit_memory::MemorySetLimiter;
    /// let set = PolicySet::single(Policy::fixed_window(3, Duration::from_secs(60)).unwrap());
    /// let limiter = MemorySetLimiter::with_clock(set, ManualClock::new(0));
    /// limiter.check_set_sync(b"k", &[2]).unwrap();
    /// assert_eq!(limiter.peek_set_sync(b"k").decisions[0].remaining, 1);
    /// assert_eq!(limiter.peek_set_sync(b"other").decisions[0].remaining, 3);
    /// ```
    #[must_use]
    pub fn peek_set_sync(&self, key: &[u8]) -> SetDecision {
        let inner = &*self.inner;
        let fp = inner.keyer.fingerprint(key);
        inner.store.peek(&self.view, fp, inner.clock.now_micros())
    }

    /// The synchronous form of [`SetLimiter::reset_set`]: forgets `key`
    /// under every policy, leases included.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{ManualClock, Policy, PolicySet};
    /// # use ratelimit_memory::MemorySetLimiter;
    /// let set = PolicySet::single(Policy::fixed_window(1, Duration::from_secs(60)).unwrap());
    /// let limiter = MemorySetLimiter::with_clock(set, ManualClock::new(0));
    /// limiter.check_set_sync(b"k", &[1]).unwrap();
    /// limiter.reset_set_sync(b"k");
    /// assert!(limiter.check_set_sync(b"k", &[1]).unwrap().decision.allowed);
    /// ```
    pub fn reset_set_sync(&self, key: &[u8]) {
        let inner = &*self.inner;
        inner.store.reset(inner.keyer.fingerprint(key));
    }

    /// The leases held for `key` now, summed over the concurrency policies:
    /// what the tests of lease leaks count.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{Concurrency, ManualClock, NamedLimit, PolicySet};
    /// # use ratelimit_memory::MemorySetLimiter;
    /// let streams = Concurrency::new(2, Duration::from_secs(30)).unwrap();
    /// let set = PolicySet::new(vec![NamedLimit::new("streams", streams).unwrap()]).unwrap();
    /// let limiter = MemorySetLimiter::with_clock(set, ManualClock::new(0));
    /// let check = limiter.check_set_sync(b"k", &[1]).unwrap();
    /// assert_eq!(limiter.leases_held(b"k"), 1);
    /// # use ratelimit_core::SetLimiter;
    /// limiter.release(check.receipt.unwrap());
    /// assert_eq!(limiter.leases_held(b"k"), 0);
    /// ```
    #[must_use]
    pub fn leases_held(&self, key: &[u8]) -> u64 {
        self.peek_set_sync(key)
            .decisions
            .iter()
            .zip(self.policy_set().limits())
            .filter(|(_, l)| matches!(l.limit(), Limit::Concurrency(_)))
            .map(|(d, l)| l.limit().limit() - d.remaining)
            .sum()
    }

    /// Forgets, shard by shard, every key that may be forgotten now (its
    /// state back to "never seen", its grace passed), and returns how
    /// many. Never needed — a shard sweeps itself as it grows — but useful
    /// before measuring. Counts them in
    /// `ratelimit_memory_keys_reclaimed_total` and records the keys held.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{ManualClock, Policy, PolicySet};
    /// # use ratelimit_memory::MemorySetLimiter;
    /// let clock = ManualClock::new(0);
    /// let set = PolicySet::single(Policy::fixed_window(5, Duration::from_secs(1)).unwrap());
    /// let limiter = MemorySetLimiter::with_clock(set, clock.clone());
    /// limiter.check_set_sync(b"a", &[1]).unwrap();
    /// assert_eq!(limiter.purge_idle(), 0);
    /// clock.advance(Duration::from_secs(1));
    /// assert_eq!(limiter.purge_idle(), 1);
    /// assert!(limiter.is_empty());
    /// ```
    pub fn purge_idle(&self) -> usize {
        let inner = &*self.inner;
        let forgotten = inner.store.purge(inner.clock.now_micros());
        self.record_len();
        forgotten
    }

    /// Reads the number of keys held, records it as the
    /// `ratelimit_memory_keys` gauge, and returns it (see
    /// [`MemoryLimiter::record_len`](crate::MemoryLimiter::record_len)).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{ManualClock, Policy, PolicySet};
    /// # use ratelimit_memory::MemorySetLimiter;
    /// let set = PolicySet::single(Policy::fixed_window(5, Duration::from_secs(1)).unwrap());
    /// let limiter = MemorySetLimiter::with_clock(set, ManualClock::new(0));
    /// limiter.check_set_sync(b"a", &[1]).unwrap();
    /// assert_eq!(limiter.record_len(), 1);
    /// ```
    pub fn record_len(&self) -> usize {
        let held = self.len();
        // Exact below 2^53 keys, far beyond what memory holds.
        self.inner.store.meters().keys.set(held as f64);
        held
    }

    /// The number of keys stored (summed shard by shard, so only exact
    /// when no other thread is calling), by this limiter and the ones
    /// [`reconfigured`](Self::reconfigured) from it or it from.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{ManualClock, Policy, PolicySet};
    /// # use ratelimit_memory::MemorySetLimiter;
    /// let set = PolicySet::single(Policy::fixed_window(5, Duration::from_secs(1)).unwrap());
    /// let limiter = MemorySetLimiter::with_clock(set, ManualClock::new(0));
    /// limiter.check_set_sync(b"a", &[1]).unwrap();
    /// limiter.peek_set_sync(b"b");
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
    /// # use ratelimit_core::{ManualClock, Policy, PolicySet};
    /// # use ratelimit_memory::MemorySetLimiter;
    /// let set = PolicySet::single(Policy::fixed_window(5, Duration::from_secs(1)).unwrap());
    /// assert!(MemorySetLimiter::with_clock(set, ManualClock::new(0)).is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The policies this limiter applies, in order.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelimit_core::{Policy, PolicySet};
    /// # use ratelimit_memory::MemorySetLimiter;
    /// let set = PolicySet::single(Policy::fixed_window(5, Duration::from_secs(1)).unwrap());
    /// assert_eq!(MemorySetLimiter::new(set.clone()).policy_set(), &set);
    /// ```
    #[must_use]
    pub fn policy_set(&self) -> &PolicySet {
        self.view.set()
    }
}

impl<C> Clone for MemorySetLimiter<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            view: self.view.clone(),
        }
    }
}

impl<C: Clock> fmt::Debug for MemorySetLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySetLimiter")
            .field("set", self.policy_set())
            .field("clock", &self.inner.clock)
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<C: Clock + 'static> SetLimiter for MemorySetLimiter<C> {
    fn policy_set(&self) -> &PolicySet {
        self.view.set()
    }

    async fn check_set(&self, key: &[u8], costs: &[u64]) -> Result<SetCheck, Error> {
        self.check_set_sync(key, costs)
    }

    fn check_set_now(&self, key: &[u8], costs: &[u64]) -> Option<Result<SetCheck, Error>> {
        Some(self.check_set_sync(key, costs))
    }

    async fn settle(&self, receipt: Receipt, actual: &[u64]) -> Result<SetDecision, Error> {
        self.settle_sync(receipt, actual)
    }

    async fn renew(&self, receipt: &mut Receipt) -> Result<bool, Error> {
        Ok(self.renew_sync(receipt))
    }

    async fn peek_set(&self, key: &[u8]) -> Result<SetDecision, Error> {
        Ok(self.peek_set_sync(key))
    }

    async fn reset_set(&self, key: &[u8]) -> Result<(), Error> {
        self.reset_set_sync(key);
        Ok(())
    }

    /// Frees the receipt's leases at once, under the key's shard lock.
    fn release(&self, receipt: Receipt) {
        let inner = &*self.inner;
        let fp = inner.keyer.fingerprint(receipt.key());
        inner
            .store
            .release(&self.view, fp, inner.clock.now_micros(), &receipt);
    }
}
