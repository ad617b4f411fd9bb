//! Stop calling a store that keeps failing; probe for its return.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use metrics::{Counter, Gauge};
use ratelimit_core::{Decision, Error, Limiter, Policy};

use crate::breaker_state::{Admit, Machine, Transition};
use crate::{BreakerOptions, BreakerState};

/// A [`Limiter`] that stops calling its inner limiter after
/// [`failure_threshold`](BreakerOptions::failure_threshold) consecutive
/// failures (errors other than a rejected cost, timeouts included).
///
/// While open, every call (check, peek, reset) returns `Err` of kind
/// [`Backend`](ratelimit_core::ErrorKind::Backend) at once, without
/// touching the inner limiter: a dead store costs callers nothing, and a
/// struggling one gets room to recover. After
/// [`open_for`](BreakerOptions::open_for) exactly one call probes the store
/// (half-open); its success closes the breaker, its failure opens it again.
/// A probe whose caller gives up counts as failed, so the breaker never
/// stays half-open.
///
/// It logs the opening at WARN (with the cause) and the closing at INFO,
/// once each; the probes in between log at DEBUG, so a long outage is not
/// one warning per `open_for`. Metrics: the gauge `ratelimit_breaker_state`
/// (0 closed, 1 open, 2 half-open) and the counter
/// `ratelimit_breaker_openings_total` (closed → open only), registered when
/// the breaker is built: install the metrics recorder before.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::{Limiter, Policy, ReferenceLimiter};
/// use ratelimit_layers::{BreakerOptions, BreakerState, CircuitBreaker};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let policy = Policy::fixed_window(5, Duration::from_secs(30)).unwrap();
/// let limiter = CircuitBreaker::new(ReferenceLimiter::new(policy), BreakerOptions::default());
/// assert_eq!(limiter.check_one(b"k").await.unwrap().remaining, 4);
/// assert_eq!(limiter.state(), BreakerState::Closed);
/// assert_eq!(limiter.open_for(), Duration::from_secs(1));
/// # });
/// ```
pub struct CircuitBreaker<L> {
    inner: L,
    machine: Machine,
    state_gauge: Gauge,
    openings: Counter,
}

impl<L> CircuitBreaker<L> {
    /// `inner` behind a closed breaker.
    pub fn new(inner: L, options: BreakerOptions) -> Self {
        let state_gauge = metrics::gauge!("ratelimit_breaker_state");
        state_gauge.set(BreakerState::Closed.as_gauge());
        Self {
            inner,
            machine: Machine::new(options),
            state_gauge,
            openings: metrics::counter!("ratelimit_breaker_openings_total"),
        }
    }

    /// Where the breaker stands. An open breaker whose `open_for` has
    /// passed is still open until a call probes.
    #[must_use]
    pub fn state(&self) -> BreakerState {
        self.machine.state()
    }

    /// How long the breaker stays open before a probe.
    #[must_use]
    pub fn open_for(&self) -> Duration {
        self.machine.options().open_for
    }

    /// The thresholds.
    #[must_use]
    pub fn options(&self) -> BreakerOptions {
        self.machine.options()
    }

    /// The wrapped limiter.
    #[must_use]
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// `call` if the breaker lets it through, its outcome reported.
    pub(crate) async fn guarded<T>(
        &self,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let probe = match self.machine.admit() {
            Admit::Call => false,
            Admit::Probe => {
                self.state_gauge.set(BreakerState::HalfOpen.as_gauge());
                tracing::debug!("circuit breaker half-open: one call probes the store");
                true
            }
            Admit::Reject => return Err(Error::backend(BreakerOpen)),
        };
        let mut pending = PendingProbe {
            breaker: self,
            armed: probe,
        };
        let result = call.await;
        pending.armed = false;
        match &result {
            // A key holding a foreign value is that key's failure: the
            // store answered, so it counts as a success (one such key must
            // not open the breaker for every key).
            Ok(_) => {
                if let Some(t) = self.machine.succeeded() {
                    self.report(t, None);
                }
            }
            Err(e) if e.is_data() => {
                if let Some(t) = self.machine.succeeded() {
                    self.report(t, None);
                }
            }
            // The cost could never be taken, or the call was malformed:
            // nothing was learnt about the store.
            Err(e) if e.is_cost_rejected() || e.is_invalid() => {
                if probe {
                    self.machine.release_probe();
                }
            }
            Err(e) => {
                if let Some(t) = self.machine.failed(probe) {
                    self.report(t, Some(e));
                }
            }
        }
        result
    }

    /// Logs and counts a transition, once: the caller made it.
    fn report(&self, transition: Transition, cause: Option<&Error>) {
        match transition {
            Transition::Opened => {
                self.state_gauge.set(BreakerState::Open.as_gauge());
                self.openings.increment(1);
                let options = self.machine.options();
                match cause {
                    Some(e) => tracing::warn!(
                        error = %e.chain(),
                        failures = options.failure_threshold.get(),
                        open_for = ?options.open_for,
                        "rate-limit store failing: circuit breaker opened"
                    ),
                    None => tracing::warn!(
                        failures = options.failure_threshold.get(),
                        open_for = ?options.open_for,
                        "rate-limit store failing: circuit breaker opened"
                    ),
                }
            }
            Transition::Reopened => {
                self.state_gauge.set(BreakerState::Open.as_gauge());
                match cause {
                    Some(e) => tracing::debug!(
                        error = %e.chain(),
                        "probe failed: circuit breaker open again"
                    ),
                    None => tracing::debug!("probe abandoned: circuit breaker open again"),
                }
            }
            Transition::Closed => {
                self.state_gauge.set(BreakerState::Closed.as_gauge());
                tracing::info!("rate-limit store answering again: circuit breaker closed");
            }
        }
    }
}

/// Counts a probe as failed if its caller gives up on it (drops the
/// future) before it reports.
struct PendingProbe<'a, L> {
    breaker: &'a CircuitBreaker<L>,
    armed: bool,
}

impl<L> Drop for PendingProbe<'_, L> {
    fn drop(&mut self) {
        if self.armed {
            if let Some(t) = self.breaker.machine.failed(true) {
                self.breaker.report(t, None);
            }
        }
    }
}

/// The cause of a call refused by an open breaker.
#[derive(Debug, Clone, Copy)]
struct BreakerOpen;

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("circuit breaker open: the store recently failed")
    }
}

impl std::error::Error for BreakerOpen {}

#[async_trait]
impl<L: Limiter> Limiter for CircuitBreaker<L> {
    async fn check(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
        self.guarded(self.inner.check(key, cost)).await
    }

    async fn peek(&self, key: &[u8]) -> Result<Decision, Error> {
        self.guarded(self.inner.peek(key)).await
    }

    async fn reset(&self, key: &[u8]) -> Result<(), Error> {
        self.guarded(self.inner.reset(key)).await
    }

    fn policies(&self) -> &[Policy] {
        self.inner.policies()
    }
}

impl<L: fmt::Debug> fmt::Debug for CircuitBreaker<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("machine", &self.machine)
            .finish_non_exhaustive()
    }
}
