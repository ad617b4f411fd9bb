//! Shared parts of the layer tests: a store that fails on cue. The log
//! capture and the metrics recorder are `ratelimit-testkit`'s.

#![allow(dead_code, unreachable_pub)] // each test binary uses a subset

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ratelimit_core::{
    Concurrency, Decision, Error, Limiter, ManualClock, NamedLimit, Policy, PolicySet, Receipt,
    ReferenceLimiter, ReferenceSetLimiter, SetCheck, SetDecision, SetLimiter,
};

/// The policy of most tests: 3 per minute.
pub fn policy() -> Policy {
    Policy::fixed_window(3, Duration::from_secs(60)).unwrap()
}

/// A [`ReferenceLimiter`] that fails (`Err` backend, "connection refused")
/// for the next `n` calls it is told to, or hangs while told to.
#[derive(Debug)]
pub struct Scripted {
    pub store: ReferenceLimiter,
    fail_next: AtomicU64,
    foreign_next: AtomicU64,
    hang: AtomicBool,
    calls: AtomicUsize,
}

impl Scripted {
    pub fn new(policy: Policy, clock: ManualClock) -> Arc<Self> {
        Arc::new(Self {
            store: ReferenceLimiter::with_clock(policy, clock),
            fail_next: AtomicU64::new(0),
            foreign_next: AtomicU64::new(0),
            hang: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
        })
    }

    /// The next `n` calls fail.
    pub fn fail_next(&self, n: u64) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// The next `n` calls answer that the key holds a foreign value.
    pub fn foreign_next(&self, n: u64) {
        self.foreign_next.store(n, Ordering::SeqCst);
    }

    /// Calls hang (forever) from now on, or not.
    pub fn hang(&self, hang: bool) {
        self.hang.store(hang, Ordering::SeqCst);
    }

    /// Calls that reached this store, failed ones included.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn gate(&self) -> Result<(), Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let failing = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            let io =
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
            return Err(Error::backend(io));
        }
        let foreign = self
            .foreign_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if foreign {
            return Err(Error::data("WRONGTYPE"));
        }
        Ok(())
    }
}

#[async_trait]
impl Limiter for Scripted {
    async fn check(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
        self.gate().await?;
        self.store.check_sync(key, cost)
    }

    async fn peek(&self, key: &[u8]) -> Result<Decision, Error> {
        self.gate().await?;
        Ok(self.store.peek_sync(key))
    }

    async fn reset(&self, key: &[u8]) -> Result<(), Error> {
        self.gate().await?;
        self.store.reset_sync(key);
        Ok(())
    }

    fn policies(&self) -> &[Policy] {
        self.store.policies()
    }
}

/// The set of the set tests: 3 requests per minute, 100 tokens per minute
/// (settled later) and 1 stream with a 10 s lease.
pub fn set() -> PolicySet {
    let minute = Duration::from_secs(60);
    PolicySet::new(vec![
        NamedLimit::new("requests", Policy::fixed_window(3, minute).unwrap()).unwrap(),
        NamedLimit::new("tokens", Policy::fixed_window(100, minute).unwrap())
            .unwrap()
            .settling(),
        NamedLimit::new(
            "streams",
            Concurrency::new(1, Duration::from_secs(10)).unwrap(),
        )
        .unwrap(),
    ])
    .unwrap()
}

/// A [`ReferenceSetLimiter`] behind the same failure switches as
/// [`Scripted`]; `release` is never refused.
#[derive(Debug)]
pub struct ScriptedSet {
    pub store: ReferenceSetLimiter,
    switches: Arc<Scripted>,
}

impl ScriptedSet {
    pub fn new(set: PolicySet, clock: ManualClock) -> Arc<Self> {
        Arc::new(Self {
            store: ReferenceSetLimiter::with_clock(set, clock.clone()),
            switches: Scripted::new(policy(), clock),
        })
    }

    /// The next `n` calls fail.
    pub fn fail_next(&self, n: u64) {
        self.switches.fail_next(n);
    }

    /// Calls hang (forever) from now on, or not.
    pub fn hang(&self, hang: bool) {
        self.switches.hang(hang);
    }

    /// Calls that reached this store, failed ones included.
    pub fn calls(&self) -> usize {
        self.switches.calls()
    }
}

#[async_trait]
impl SetLimiter for ScriptedSet {
    fn policy_set(&self) -> &PolicySet {
        self.store.policy_set()
    }

    async fn check_set(&self, key: &[u8], costs: &[u64]) -> Result<SetCheck, Error> {
        self.switches.gate().await?;
        self.store.check_set_sync(key, costs)
    }

    async fn settle(&self, receipt: Receipt, actual: &[u64]) -> Result<SetDecision, Error> {
        self.switches.gate().await?;
        self.store.settle_sync(receipt, actual)
    }

    async fn renew(&self, receipt: &mut Receipt) -> Result<bool, Error> {
        self.switches.gate().await?;
        Ok(self.store.renew_sync(receipt))
    }

    async fn peek_set(&self, key: &[u8]) -> Result<SetDecision, Error> {
        self.switches.gate().await?;
        Ok(self.store.peek_set_sync(key))
    }

    async fn reset_set(&self, key: &[u8]) -> Result<(), Error> {
        self.switches.gate().await?;
        self.store.reset_set_sync(key);
        Ok(())
    }

    fn release(&self, receipt: Receipt) {
        self.store.release(receipt);
    }
}
