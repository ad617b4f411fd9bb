//! Decide by a failure policy when the store cannot.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use ratelimit_core::{Algorithm, Decision, Error, FailurePolicy, Limiter, Policy};
use ratelimit_memory::MemoryLimiter;

use crate::outage::Outage;

/// A [`Limiter`] that answers with a [`FailurePolicy`] when its inner
/// limiter returns `Err` for another reason than a cost that can never be
/// taken (a backend error, a timeout, an open circuit breaker):
///
/// - [`Closed`](FailurePolicy::Closed): denied, `remaining` 0,
///   `reset_after` zero and `retry_after` the configured wait (1 s by
///   default; [`ResilienceConfig`](crate::ResilienceConfig) sets the
///   breaker's `open_for`, when the store is next tried);
/// - [`Open`](FailurePolicy::Open): allowed, `remaining` the limit,
///   `reset_after` zero;
/// - [`Fallback`](FailurePolicy::Fallback): the fallback limiter's answer,
///   by default a [`MemoryLimiter`] of the same policy (counts per process).
///
/// Every such decision carries the policy in
/// [`Decision::degraded`](ratelimit_core::Decision::degraded), so a
/// middleware can tell "the store said no" from "nobody could ask the
/// store". The first degraded decision after good ones logs one WARN with
/// the cause, the first good one after degraded ones one INFO; nothing is
/// logged per request. Degraded decisions are counted
/// ([`degraded_decisions`](Self::degraded_decisions) and the counter
/// `ratelimit_degraded_decisions_total{failure}`, registered when the layer
/// is built). Resets are not decisions: their errors pass through (after
/// the fallback limiter forgets the key too).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::{FailurePolicy, Limiter, Policy, ReferenceLimiter};
/// use ratelimit_layers::Failover;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let policy = Policy::fixed_window(5, Duration::from_secs(30)).unwrap();
/// let limiter = Failover::new(ReferenceLimiter::new(policy), FailurePolicy::Closed)
///     .with_retry_after(Duration::from_secs(2));
/// let d = limiter.check_one(b"k").await.unwrap();
/// assert!(d.allowed && !d.is_degraded(), "the store decided");
/// assert_eq!(limiter.degraded_decisions(), 0);
/// assert_eq!(limiter.last_error(), None);
/// # });
/// ```
pub struct Failover<L> {
    inner: L,
    failure: FailurePolicy,
    retry_after: Duration,
    fallback: OnceLock<Arc<dyn Limiter>>,
    /// The current spell of degraded decisions, logged once each way.
    outage: Outage,
}

impl<L: Limiter> Failover<L> {
    /// `inner`, with `failure` deciding when it cannot.
    pub fn new(inner: L, failure: FailurePolicy) -> Self {
        let this = Self {
            inner,
            failure,
            retry_after: crate::BreakerOptions::DEFAULT_OPEN_FOR,
            fallback: OnceLock::new(),
            outage: Outage::new(failure),
        };
        if failure == FailurePolicy::Fallback {
            // Built now rather than in the middle of an outage.
            this.fallback();
        }
        this
    }

    /// The `retry_after` of a [`Closed`](FailurePolicy::Closed) denial.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// The limiter [`Fallback`](FailurePolicy::Fallback) asks. It should
    /// apply the same policy.
    #[must_use]
    pub fn with_fallback(mut self, fallback: Arc<dyn Limiter>) -> Self {
        self.fallback = OnceLock::from(fallback);
        self
    }

    /// The failure policy.
    #[must_use]
    pub fn failure_policy(&self) -> FailurePolicy {
        self.failure
    }

    /// The `retry_after` of a [`Closed`](FailurePolicy::Closed) denial.
    #[must_use]
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// How many decisions the failure policy has made.
    #[must_use]
    pub fn degraded_decisions(&self) -> u64 {
        self.outage.total()
    }

    /// Whether the last decision was made by the failure policy.
    #[must_use]
    pub fn is_degraded(&self) -> bool {
        self.outage.is_on()
    }

    /// Why the store could not decide when the current (or last) spell of
    /// degraded decisions began, as `"error: cause: cause"`; `None` if it
    /// never failed. Callers only see the degraded decisions: operators
    /// read the cause here (and in the WARN line).
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        self.outage.last_error()
    }

    /// The wrapped limiter.
    #[must_use]
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// The fallback limiter, built on first use when none was given.
    fn fallback(&self) -> Option<&Arc<dyn Limiter>> {
        if let Some(fallback) = self.fallback.get() {
            return Some(fallback);
        }
        let policy = *self.inner.policies().first()?;
        Some(
            self.fallback
                .get_or_init(|| Arc::new(MemoryLimiter::new(policy)) as Arc<dyn Limiter>),
        )
    }

    /// Passes a good decision on, logging the end of a degraded spell.
    #[inline]
    fn good(&self, decision: Decision) -> Decision {
        self.outage.ended();
        decision
    }

    /// The failure policy's decision of `cost` (`None`: a peek) on `key`.
    async fn degrade(
        &self,
        key: &[u8],
        cost: Option<u64>,
        error: Error,
    ) -> Result<Decision, Error> {
        let policy = self.inner.policies().first();
        if let (Some(policy), Some(cost)) = (policy, cost) {
            // No policy may allow what can never be allowed.
            policy.validate_cost(cost)?;
        }
        self.outage.decided();
        self.outage.began(
            &error,
            "rate-limit store cannot decide: decisions are degraded",
        );
        let limit = policy.map_or(0, Policy::limit);
        let decision = match self.failure {
            FailurePolicy::Closed => Decision::denied(limit, 0, Duration::ZERO, self.retry_after),
            // Anything up to the limit would be allowed.
            FailurePolicy::Open => Decision::allowed(limit, limit, Duration::ZERO),
            FailurePolicy::Fallback => {
                let Some(fallback) = self.fallback() else {
                    // A limiter without a policy has no default fallback.
                    return Err(error);
                };
                match cost {
                    Some(cost) => fallback.check(key, cost).await?,
                    None => fallback.peek(key).await?,
                }
            }
        };
        Ok(decision.with_degraded(self.failure))
    }
}

#[async_trait]
impl<L: Limiter> Limiter for Failover<L> {
    async fn check(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
        match self.inner.check(key, cost).await {
            Ok(decision) if decision.is_degraded() => Ok(decision),
            Ok(decision) => Ok(self.good(decision)),
            Err(e) if e.is_cost_rejected() => Err(e),
            Err(e) => self.degrade(key, Some(cost), e).await,
        }
    }

    async fn peek(&self, key: &[u8]) -> Result<Decision, Error> {
        match self.inner.peek(key).await {
            Ok(decision) if decision.is_degraded() => Ok(decision),
            Ok(decision) => Ok(self.good(decision)),
            Err(e) if e.is_cost_rejected() => Err(e),
            Err(e) => self.degrade(key, None, e).await,
        }
    }

    async fn reset(&self, key: &[u8]) -> Result<(), Error> {
        if let Some(fallback) = self.fallback.get() {
            fallback.reset(key).await?;
        }
        self.inner.reset(key).await
    }

    fn policies(&self) -> &[Policy] {
        self.inner.policies()
    }
}

impl<L: fmt::Debug> fmt::Debug for Failover<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failover")
            .field("inner", &self.inner)
            .field("failure", &self.failure)
            .field("retry_after", &self.retry_after)
            .field("fallback", &self.fallback.get().map(|_| "set"))
            .field("degraded_decisions", &self.outage.total())
            .finish_non_exhaustive()
    }
}
