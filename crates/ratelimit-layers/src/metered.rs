//! Metrics and a trace span for every check.

use std::fmt;

use async_trait::async_trait;
use metrics::{Counter, Histogram};
use ratelimit_core::{Decision, Error, Limiter, Policy};
use tokio::time::Instant;
use tracing::Instrument;

use crate::KeyHash;

/// A [`Limiter`] that measures every check through the
/// [`metrics`] facade and traces it with [`tracing`]:
///
/// - counter `ratelimit_decisions_total{outcome, policy}`, `outcome` one of
///   `allowed`, `denied`, `degraded` (a decision a failure policy made,
///   allowed or not) and `error`; `policy` the algorithm
///   (`fixed_window`, `sliding_window`, `token_bucket`);
/// - histogram `ratelimit_decision_seconds{policy}`, the time each check
///   took, errors included;
/// - a DEBUG span `ratelimit.check` with the key as a [`KeyHash`] (never
///   the raw key), the cost and the outcome.
///
/// The metric handles are registered once, when the layer is built (so
/// the recorder must be installed before), not per call. Peeks and resets
/// pass through unmeasured.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::{Limiter, Policy, ReferenceLimiter};
/// use ratelimit_layers::Metered;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let policy = Policy::token_bucket(2, 1, Duration::from_secs(1)).unwrap();
/// let limiter = Metered::new(ReferenceLimiter::new(policy));
/// assert_eq!(limiter.policy_label(), "token_bucket");
/// assert_eq!(limiter.check_one(b"k").await.unwrap().remaining, 1);
/// # });
/// ```
pub struct Metered<L> {
    inner: L,
    pub(crate) policy: &'static str,
    pub(crate) allowed: Counter,
    pub(crate) denied: Counter,
    pub(crate) degraded: Counter,
    pub(crate) error: Counter,
    pub(crate) seconds: Histogram,
    /// `(ok, error)` settle counters, for a set limiter only.
    pub(crate) settles: Option<(Counter, Counter)>,
}

impl<L: Limiter> Metered<L> {
    /// `inner`, measured under the name of its (first) policy's algorithm.
    pub fn new(inner: L) -> Self {
        let policy = inner
            .policies()
            .first()
            .map_or("none", Policy::algorithm_name);
        Self::labelled(inner, policy)
    }
}

impl<L> Metered<L> {
    /// `inner`, measured under the `policy` label `label`.
    pub(crate) fn labelled(inner: L, policy: &'static str) -> Self {
        let outcome = |outcome: &'static str| metrics::counter!("ratelimit_decisions_total", "outcome" => outcome, "policy" => policy);
        Self {
            allowed: outcome("allowed"),
            denied: outcome("denied"),
            degraded: outcome("degraded"),
            error: outcome("error"),
            seconds: metrics::histogram!("ratelimit_decision_seconds", "policy" => policy),
            settles: None,
            policy,
            inner,
        }
    }

    /// The `policy` label of this layer's metrics.
    #[must_use]
    pub fn policy_label(&self) -> &'static str {
        self.policy
    }

    /// The wrapped limiter.
    #[must_use]
    pub fn inner(&self) -> &L {
        &self.inner
    }
}

impl<L> Metered<L> {
    /// Records the time since `started` and counts `result`'s outcome,
    /// naming it on `span`.
    fn measured(
        &self,
        span: &tracing::Span,
        started: Instant,
        result: Result<Decision, Error>,
    ) -> Result<Decision, Error> {
        self.seconds.record(started.elapsed().as_secs_f64());
        let (counter, outcome) = match &result {
            Ok(d) if d.is_degraded() => (&self.degraded, "degraded"),
            Ok(d) if d.allowed => (&self.allowed, "allowed"),
            Ok(_) => (&self.denied, "denied"),
            Err(_) => (&self.error, "error"),
        };
        counter.increment(1);
        span.record("outcome", outcome);
        result
    }
}

#[async_trait]
impl<L: Limiter> Limiter for Metered<L> {
    async fn check(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
        let span = tracing::debug_span!(
            "ratelimit.check",
            key = %KeyHash(key),
            cost,
            policy = self.policy,
            outcome = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = self.inner.check(key, cost).instrument(span.clone()).await;
        self.measured(&span, started, result)
    }

    /// The inner limiter's answer at once, measured and traced as
    /// [`check`](Self::check) measures it; `None` records nothing (the
    /// awaited check that follows does).
    fn check_now(&self, key: &[u8], cost: u64) -> Option<Result<Decision, Error>> {
        let span = tracing::debug_span!(
            "ratelimit.check",
            key = %KeyHash(key),
            cost,
            policy = self.policy,
            outcome = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = span.in_scope(|| self.inner.check_now(key, cost))?;
        Some(self.measured(&span, started, result))
    }

    async fn peek(&self, key: &[u8]) -> Result<Decision, Error> {
        self.inner.peek(key).await
    }

    async fn reset(&self, key: &[u8]) -> Result<(), Error> {
        self.inner.reset(key).await
    }

    fn policies(&self) -> &[Policy] {
        self.inner.policies()
    }
}

impl<L: fmt::Debug> fmt::Debug for Metered<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metered")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}
