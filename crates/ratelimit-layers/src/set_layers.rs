//! The layers over a [`SetLimiter`]: the same timeout, circuit breaker and
//! metrics as over a [`Limiter`](ratelimit_core::Limiter), and a
//! [`SetFailover`] that decides by a failure policy when the store cannot.
//!
//! A [`DenyCache`](crate::DenyCache) has no set form: a set's denial
//! depends on every policy's cost, so a cached denial of one cost vector
//! says little about the next.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use metrics::Counter;
use ratelimit_core::{
    Decision, Error, FailurePolicy, PolicySet, Receipt, SetCheck, SetDecision, SetLimiter,
};
use tokio::time::Instant;
use tracing::Instrument;

use crate::outage::Outage;
use crate::{CircuitBreaker, KeyHash, Metered, Timeout};

#[async_trait]
impl<L: SetLimiter> SetLimiter for Timeout<L> {
    fn policy_set(&self) -> &PolicySet {
        self.inner().policy_set()
    }

    /// A set check that times out may still have taken its costs and a
    /// lease in the store; the lease then expires by its TTL.
    async fn check_set(&self, key: &[u8], costs: &[u64]) -> Result<SetCheck, Error> {
        self.bounded(self.inner().check_set(key, costs)).await
    }

    async fn settle(&self, receipt: Receipt, actual: &[u64]) -> Result<SetDecision, Error> {
        self.bounded(self.inner().settle(receipt, actual)).await
    }

    async fn renew(&self, receipt: &mut Receipt) -> Result<bool, Error> {
        self.bounded(self.inner().renew(receipt)).await
    }

    async fn peek_set(&self, key: &[u8]) -> Result<SetDecision, Error> {
        self.bounded(self.inner().peek_set(key)).await
    }

    async fn reset_set(&self, key: &[u8]) -> Result<(), Error> {
        self.bounded(self.inner().reset_set(key)).await
    }

    fn release(&self, receipt: Receipt) {
        self.inner().release(receipt);
    }
}

#[async_trait]
impl<L: SetLimiter> SetLimiter for CircuitBreaker<L> {
    fn policy_set(&self) -> &PolicySet {
        self.inner().policy_set()
    }

    async fn check_set(&self, key: &[u8], costs: &[u64]) -> Result<SetCheck, Error> {
        self.guarded(self.inner().check_set(key, costs)).await
    }

    /// While the breaker is open a settle is refused: the estimate stays
    /// charged and the receipt's leases expire by their TTL.
    async fn settle(&self, receipt: Receipt, actual: &[u64]) -> Result<SetDecision, Error> {
        self.guarded(self.inner().settle(receipt, actual)).await
    }

    async fn renew(&self, receipt: &mut Receipt) -> Result<bool, Error> {
        self.guarded(self.inner().renew(receipt)).await
    }

    async fn peek_set(&self, key: &[u8]) -> Result<SetDecision, Error> {
        self.guarded(self.inner().peek_set(key)).await
    }

    async fn reset_set(&self, key: &[u8]) -> Result<(), Error> {
        self.guarded(self.inner().reset_set(key)).await
    }

    /// Sent whatever the breaker's state: a release costs the store
    /// nothing it could not answer, and freeing a slot at once matters.
    fn release(&self, receipt: Receipt) {
        self.inner().release(receipt);
    }
}

impl<L: SetLimiter> Metered<L> {
    /// `inner`, measured under the `policy` label `set`; settles are
    /// counted in `ratelimit_settles_total{outcome}` (`ok`, `error`).
    pub fn for_set(inner: L) -> Self {
        let settles = |outcome: &'static str| metrics::counter!("ratelimit_settles_total", "outcome" => outcome);
        let mut this = Self::labelled(inner, "set");
        this.settles = Some((settles("ok"), settles("error")));
        this
    }
}

#[async_trait]
impl<L: SetLimiter> SetLimiter for Metered<L> {
    fn policy_set(&self) -> &PolicySet {
        self.inner().policy_set()
    }

    async fn check_set(&self, key: &[u8], costs: &[u64]) -> Result<SetCheck, Error> {
        let span = tracing::debug_span!(
            "ratelimit.check_set",
            key = %KeyHash(key),
            policy = self.policy,
            outcome = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = self
            .inner()
            .check_set(key, costs)
            .instrument(span.clone())
            .await;
        self.seconds.record(started.elapsed().as_secs_f64());
        let (counter, outcome) = match &result {
            Ok(c) if c.decision.degraded.is_some() => (&self.degraded, "degraded"),
            Ok(c) if c.decision.allowed => (&self.allowed, "allowed"),
            Ok(_) => (&self.denied, "denied"),
            Err(_) => (&self.error, "error"),
        };
        counter.increment(1);
        span.record("outcome", outcome);
        result
    }

    async fn settle(&self, receipt: Receipt, actual: &[u64]) -> Result<SetDecision, Error> {
        let result = self.inner().settle(receipt, actual).await;
        if let Some((ok, error)) = &self.settles {
            if result.is_ok() { ok } else { error }.increment(1);
        }
        result
    }

    async fn renew(&self, receipt: &mut Receipt) -> Result<bool, Error> {
        self.inner().renew(receipt).await
    }

    async fn peek_set(&self, key: &[u8]) -> Result<SetDecision, Error> {
        self.inner().peek_set(key).await
    }

    async fn reset_set(&self, key: &[u8]) -> Result<(), Error> {
        self.inner().reset_set(key).await
    }

    fn release(&self, receipt: Receipt) {
        self.inner().release(receipt);
    }
}

/// A [`SetLimiter`] that decides by a [`FailurePolicy`] when the store
/// cannot, as [`Failover`](crate::Failover) does for one policy.
///
/// - `closed`: every policy denies with `retry_after` (the breaker's
///   `open_for` by default); no receipt.
/// - `open`: every policy allows; the receipt is marked degraded and holds
///   nothing, so settling, renewing or dropping it does nothing.
/// - `fallback`: the fallback limiter (in process) decides, and its receipts
///   settle there, even after the store is back.
///
/// Every such decision is marked degraded and counted in
/// `ratelimit_degraded_decisions_total{failure}`; the first of an outage is
/// logged at WARN with its cause, and the first good one after it at INFO.
/// A settle the store cannot take is an error (the estimate stays charged;
/// a refund is lost, never doubled), counted in
/// `ratelimit_settle_failures_total` and logged once per outage.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use ratelimit_core::{FailurePolicy, NamedLimit, Policy, PolicySet, ReferenceSetLimiter, SetLimiter};
/// use ratelimit_layers::SetFailover;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let set = PolicySet::new(vec![
///     NamedLimit::new("requests", Policy::fixed_window(5, Duration::from_secs(30)).unwrap()).unwrap(),
/// ]).unwrap();
/// let limiter = SetFailover::new(ReferenceSetLimiter::new(set), FailurePolicy::Closed);
/// let check = limiter.check_set(b"k", &[1]).await.unwrap();
/// assert!(check.decision.allowed && check.decision.degraded.is_none());
/// # });
/// ```
pub struct SetFailover<L> {
    inner: L,
    failure: FailurePolicy,
    retry_after: Duration,
    fallback: Option<Arc<dyn SetLimiter>>,
    outage: Outage,
    settle_failures: Counter,
}

impl<L: SetLimiter> SetFailover<L> {
    /// `inner`, decided by `failure` when it cannot decide. With
    /// [`FailurePolicy::Fallback`] and no [`with_fallback`](Self::with_fallback),
    /// a check the store cannot decide is an error.
    pub fn new(inner: L, failure: FailurePolicy) -> Self {
        Self {
            inner,
            failure,
            retry_after: crate::BreakerOptions::DEFAULT_OPEN_FOR,
            fallback: None,
            outage: Outage::new(failure),
            settle_failures: metrics::counter!("ratelimit_settle_failures_total"),
        }
    }

    /// The `retry_after` of a fail-closed denial.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// The limiter that decides under [`FailurePolicy::Fallback`]: an
    /// in-process one over the same set.
    #[must_use]
    pub fn with_fallback(mut self, fallback: Arc<dyn SetLimiter>) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// The failure policy.
    #[must_use]
    pub fn failure_policy(&self) -> FailurePolicy {
        self.failure
    }

    /// How many decisions the failure policy made.
    #[must_use]
    pub fn degraded_decisions(&self) -> u64 {
        self.outage.total()
    }

    /// Whether the last decision was degraded.
    #[must_use]
    pub fn is_degraded(&self) -> bool {
        self.outage.is_on()
    }

    /// The cause of the current (or last) outage, as logged.
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        self.outage.last_error()
    }

    /// The wrapped limiter.
    #[must_use]
    pub fn inner(&self) -> &L {
        &self.inner
    }

    fn uniform(&self, allowed: bool) -> SetDecision {
        let decisions = self.inner.policy_set().limits().iter().map(|l| {
            let limit = l.limit().limit();
            if allowed {
                Decision::allowed(limit, limit, Duration::ZERO)
            } else {
                Decision::denied(limit, 0, Duration::ZERO, self.retry_after)
            }
        });
        SetDecision::from_decisions(decisions).with_degraded(self.failure)
    }

    fn fallback_or(&self, error: Error) -> Result<&Arc<dyn SetLimiter>, Error> {
        self.fallback.as_ref().ok_or(error)
    }

    async fn degrade_check(
        &self,
        key: &[u8],
        costs: &[u64],
        error: Error,
    ) -> Result<SetCheck, Error> {
        // No policy may allow what the store would refuse.
        self.inner.policy_set().validate_costs(costs)?;
        self.outage.began(
            &error,
            "rate-limit store cannot decide: set decisions are degraded",
        );
        self.outage.decided();
        Ok(match self.failure {
            FailurePolicy::Closed => SetCheck::new(self.uniform(false), None),
            FailurePolicy::Open => SetCheck::new(
                self.uniform(true),
                Some(Receipt::degraded(key, FailurePolicy::Open, [])),
            ),
            FailurePolicy::Fallback => {
                let check = self.fallback_or(error)?.check_set(key, costs).await?;
                let receipt = check.receipt.map(|r| {
                    Receipt::degraded(r.key(), FailurePolicy::Fallback, r.parts().iter().copied())
                });
                SetCheck::new(check.decision.with_degraded(self.failure), receipt)
            }
        })
    }
}

#[async_trait]
impl<L: SetLimiter> SetLimiter for SetFailover<L> {
    fn policy_set(&self) -> &PolicySet {
        self.inner.policy_set()
    }

    async fn check_set(&self, key: &[u8], costs: &[u64]) -> Result<SetCheck, Error> {
        match self.inner.check_set(key, costs).await {
            Ok(check) => {
                if check.decision.degraded.is_none() {
                    self.outage.ended();
                }
                Ok(check)
            }
            Err(e) if e.is_cost_rejected() || e.is_invalid() => Err(e),
            Err(e) => self.degrade_check(key, costs, e).await,
        }
    }

    async fn settle(&self, receipt: Receipt, actual: &[u64]) -> Result<SetDecision, Error> {
        match receipt.degraded_by() {
            Some(FailurePolicy::Fallback) => match &self.fallback {
                Some(fallback) => Ok(fallback
                    .settle(receipt.into_undegraded(), actual)
                    .await?
                    .with_degraded(FailurePolicy::Fallback)),
                None => Err(Error::invalid(
                    "a fallback receipt, but no fallback limiter",
                )),
            },
            Some(policy) => Ok(SetDecision::from_decisions(
                self.uniform(true).decisions.iter().copied(),
            )
            .with_degraded(policy)),
            None => match self.inner.settle(receipt, actual).await {
                Ok(d) => Ok(d),
                Err(e) if e.is_invalid() || e.is_cost_rejected() || e.is_data() => Err(e),
                Err(e) => {
                    self.settle_failures.increment(1);
                    self.outage.began(
                        &e,
                        "rate-limit store cannot settle: estimates stay charged, leases expire by TTL",
                    );
                    Err(e)
                }
            },
        }
    }

    async fn renew(&self, receipt: &mut Receipt) -> Result<bool, Error> {
        match receipt.degraded_by() {
            Some(FailurePolicy::Fallback) => {
                let fallback = self.fallback_or(Error::invalid(
                    "a fallback receipt, but no fallback limiter",
                ))?;
                let mut plain = std::mem::replace(receipt, Receipt::new(b"", [])).into_undegraded();
                let held = fallback.renew(&mut plain).await;
                *receipt = Receipt::degraded(
                    plain.key(),
                    FailurePolicy::Fallback,
                    plain.parts().iter().copied(),
                );
                held
            }
            Some(_) => Ok(true),
            None => self.inner.renew(receipt).await,
        }
    }

    async fn peek_set(&self, key: &[u8]) -> Result<SetDecision, Error> {
        match self.inner.peek_set(key).await {
            Ok(d) => Ok(d),
            Err(e) if e.is_invalid() => Err(e),
            Err(e) => {
                self.outage.began(
                    &e,
                    "rate-limit store cannot decide: set decisions are degraded",
                );
                match self.failure {
                    FailurePolicy::Closed => Ok(self.uniform(false)),
                    FailurePolicy::Open => Ok(self.uniform(true)),
                    FailurePolicy::Fallback => Ok(self
                        .fallback_or(e)?
                        .peek_set(key)
                        .await?
                        .with_degraded(FailurePolicy::Fallback)),
                }
            }
        }
    }

    async fn reset_set(&self, key: &[u8]) -> Result<(), Error> {
        if let Some(fallback) = &self.fallback {
            fallback.reset_set(key).await?;
        }
        self.inner.reset_set(key).await
    }

    fn release(&self, receipt: Receipt) {
        match receipt.degraded_by() {
            Some(FailurePolicy::Fallback) => {
                if let Some(fallback) = &self.fallback {
                    fallback.release(receipt.into_undegraded());
                }
            }
            Some(_) => {}
            None => self.inner.release(receipt),
        }
    }
}

impl<L: fmt::Debug> fmt::Debug for SetFailover<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetFailover")
            .field("inner", &self.inner)
            .field("failure", &self.failure)
            .field("retry_after", &self.retry_after)
            .field("fallback", &self.fallback.is_some())
            .finish_non_exhaustive()
    }
}
