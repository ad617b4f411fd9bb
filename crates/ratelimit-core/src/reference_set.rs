//! The reference [`SetLimiter`]: the pure set math over an in-process map.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::{
    Clock, Error, LeaseId, PolicySet, Receipt, SetCheck, SetDecision, SetLimiter, SetState,
    SystemClock,
};

/// The reference [`SetLimiter`]: [`PolicySet`]'s pure functions applied to
/// a `HashMap` behind a mutex. The oracle of the conformance and
/// differential tests, not a production backend (its memory grows with the
/// keys seen until [`purge_idle`](Self::purge_idle) is called).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::{ManualClock, NamedLimit, Policy, PolicySet, ReferenceSetLimiter};
///
/// let clock = ManualClock::new(0);
/// let set = PolicySet::new(vec![
///     NamedLimit::new("tokens", Policy::token_bucket(100, 100, Duration::from_secs(60)).unwrap())
///         .unwrap()
///         .settling(),
/// ]).unwrap();
/// let limiter = ReferenceSetLimiter::with_clock(set, clock.clone());
/// let check = limiter.check_set_sync(b"k", &[100]).unwrap();
/// assert!(!limiter.check_set_sync(b"k", &[1]).unwrap().decision.allowed);
/// let after = limiter.settle_sync(check.receipt.unwrap(), &[40]).unwrap();
/// assert_eq!(after.decisions[0].remaining, 60);
/// ```
pub struct ReferenceSetLimiter {
    set: PolicySet,
    clock: Arc<dyn Clock>,
    keys: Mutex<HashMap<Box<[u8]>, SetState>>,
    next_lease: AtomicU64,
}

impl ReferenceSetLimiter {
    /// A limiter on the [`SystemClock`].
    #[must_use]
    pub fn new(set: PolicySet) -> Self {
        Self::with_clock(set, SystemClock::new())
    }

    /// A limiter on the given clock.
    #[must_use]
    pub fn with_clock(set: PolicySet, clock: impl Clock + 'static) -> Self {
        Self {
            set,
            clock: Arc::new(clock),
            keys: Mutex::new(HashMap::new()),
            next_lease: AtomicU64::new(1),
        }
    }

    fn keys(&self) -> MutexGuard<'_, HashMap<Box<[u8]>, SetState>> {
        // Every update is computed first and written whole, so a panic
        // while holding the lock cannot leave a state half-updated.
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The synchronous form of [`SetLimiter::check_set`].
    ///
    /// # Errors
    ///
    /// As [`PolicySet::check`].
    pub fn check_set_sync(&self, key: &[u8], costs: &[u64]) -> Result<SetCheck, Error> {
        let now = self.clock.now_micros();
        let mut keys = self.keys();
        let mut state = keys.get(key).cloned().unwrap_or_default();
        let mut new_lease =
            || LeaseId::new(u128::from(self.next_lease.fetch_add(1, Ordering::Relaxed)));
        let (decision, receipt) = self
            .set
            .check(key, &mut state, now, costs, &mut new_lease)?;
        keys.insert(key.into(), state);
        Ok(SetCheck::new(decision, receipt))
    }

    /// The synchronous form of [`SetLimiter::settle`].
    ///
    /// # Errors
    ///
    /// As [`PolicySet::settle`].
    pub fn settle_sync(&self, receipt: Receipt, actual: &[u64]) -> Result<SetDecision, Error> {
        let now = self.clock.now_micros();
        let mut keys = self.keys();
        let state = keys.entry(receipt.key().into()).or_default();
        self.set.settle(state, now, receipt.parts(), actual)
    }

    /// The synchronous form of [`SetLimiter::renew`].
    pub fn renew_sync(&self, receipt: &mut Receipt) -> bool {
        let now = self.clock.now_micros();
        let mut keys = self.keys();
        let state = keys.entry(receipt.key().into()).or_default();
        self.set.renew(state, now, receipt.parts_mut())
    }

    /// The synchronous form of [`SetLimiter::peek_set`].
    #[must_use]
    pub fn peek_set_sync(&self, key: &[u8]) -> SetDecision {
        let now = self.clock.now_micros();
        let keys = self.keys();
        let empty = SetState::default();
        self.set.peek(keys.get(key).unwrap_or(&empty), now)
    }

    /// The synchronous form of [`SetLimiter::reset_set`].
    pub fn reset_set_sync(&self, key: &[u8]) {
        self.keys().remove(key);
    }

    /// The number of leases held for `key` under each concurrency policy,
    /// summed: what the tests of lease leaks count.
    #[must_use]
    pub fn leases_held(&self, key: &[u8]) -> u64 {
        self.peek_set_sync(key)
            .decisions
            .iter()
            .zip(self.set.limits())
            .filter(|(_, l)| matches!(l.limit(), crate::Limit::Concurrency(_)))
            .map(|(d, l)| l.limit().limit() - d.remaining)
            .sum()
    }

    /// Forgets every key whose state is equivalent to a key never seen;
    /// returns how many were forgotten.
    pub fn purge_idle(&self) -> usize {
        let now = self.clock.now_micros();
        let mut keys = self.keys();
        let before = keys.len();
        keys.retain(|_, state| !self.set.is_idle(state, now));
        before - keys.len()
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
}

impl fmt::Debug for ReferenceSetLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReferenceSetLimiter")
            .field("set", &self.set)
            .field("clock", &self.clock)
            .field("keys", &self.len())
            .finish()
    }
}

#[async_trait]
impl SetLimiter for ReferenceSetLimiter {
    fn policy_set(&self) -> &PolicySet {
        &self.set
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

    fn release(&self, receipt: Receipt) {
        let now = self.clock.now_micros();
        let mut keys = self.keys();
        if let Some(state) = keys.get_mut(receipt.key()) {
            self.set.release(state, now, receipt.parts());
        }
    }
}
