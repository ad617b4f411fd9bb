//! The circuit breaker's state machine, in one atomic word.
//!
//! Closed → (threshold consecutive failures) → Open → (`open_for` later,
//! one call let through) → HalfOpen → Closed on success, Open on failure.
//!
//! The whole state is one `AtomicU64` so that a call while closed costs one
//! load before and one load after (no lock, no write, no clock read), and
//! every transition is one compare-and-swap: exactly one caller makes each
//! transition, so each is reported (logged, counted) once.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use crate::BreakerOptions;

/// Where a [`CircuitBreaker`](crate::CircuitBreaker) stands.
///
/// # Examples
///
/// ```
/// use ratelimit_layers::BreakerState;
/// assert_eq!(BreakerState::HalfOpen.as_gauge(), 2.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go to the inner limiter.
    Closed,
    /// The store recently failed: calls fail at once.
    Open,
    /// One call is probing the store; the others fail at once.
    HalfOpen,
}

impl BreakerState {
    /// The value of the `ratelimit_breaker_state` gauge: 0 closed, 1 open,
    /// 2 half-open.
    #[must_use]
    pub const fn as_gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
        }
    }
}

const TAG_SHIFT: u32 = 62;
const PAYLOAD: u64 = (1 << TAG_SHIFT) - 1;
const CLOSED: u64 = 0;
const OPEN: u64 = 1 << TAG_SHIFT;
const HALF_OPEN: u64 = 2 << TAG_SHIFT;
/// Closed with no failure counted: the word of a healthy breaker.
const HEALTHY: u64 = CLOSED;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Call the inner limiter.
    Call,
    /// Call it as the one probe (this caller moved the breaker to half-open).
    Probe,
    /// Fail at once.
    Reject,
}

/// A transition some report made, for the caller to log and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// Closed → Open: the store started failing.
    Opened,
    /// HalfOpen → Open: the probe failed.
    Reopened,
    /// Open or HalfOpen → Closed.
    Closed,
}

/// The state word and what it needs to move on.
#[derive(Debug)]
pub(crate) struct Machine {
    options: BreakerOptions,
    /// Open-until instants are µs after this.
    base: Instant,
    /// Tag in the top two bits; below them the consecutive failures when
    /// closed, or the µs after `base` until which it stays open.
    word: AtomicU64,
}

impl Machine {
    pub(crate) fn new(options: BreakerOptions) -> Self {
        Self {
            options,
            base: Instant::now(),
            word: AtomicU64::new(HEALTHY),
        }
    }

    pub(crate) fn options(&self) -> BreakerOptions {
        self.options
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.word.load(Ordering::Acquire) & !PAYLOAD {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go now; an open breaker whose time is up lets
    /// exactly one caller through as the probe.
    #[inline]
    pub(crate) fn admit(&self) -> Admit {
        let word = self.word.load(Ordering::Acquire);
        match word & !PAYLOAD {
            CLOSED => Admit::Call,
            OPEN if self.now() >= word & PAYLOAD => {
                match self.word.compare_exchange(
                    word,
                    HALF_OPEN,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => Admit::Probe,
                    // Another caller took the probe (or something else
                    // moved the state): this one waits its turn.
                    Err(_) => Admit::Reject,
                }
            }
            _ => Admit::Reject,
        }
    }

    /// The inner limiter answered. Any answer shows the store is back, so
    /// it closes the breaker, a late answer to a call made before it opened
    /// included.
    #[inline]
    pub(crate) fn succeeded(&self) -> Option<Transition> {
        // The healthy path: one load, no write.
        if self.word.load(Ordering::Acquire) == HEALTHY {
            return None;
        }
        let before = self.word.swap(HEALTHY, Ordering::AcqRel);
        (before & !PAYLOAD != CLOSED).then_some(Transition::Closed)
    }

    /// The inner limiter failed (an error or a timeout).
    pub(crate) fn failed(&self, probe: bool) -> Option<Transition> {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let (next, transition) = match word & !PAYLOAD {
                CLOSED => {
                    let failures = (word & PAYLOAD).saturating_add(1);
                    if failures >= u64::from(self.options.failure_threshold.get()) {
                        (self.open_until(), Some(Transition::Opened))
                    } else {
                        (CLOSED | failures.min(PAYLOAD), None)
                    }
                }
                HALF_OPEN if probe => (self.open_until(), Some(Transition::Reopened)),
                // A late failure of a call made before the breaker opened,
                // while open or probing, changes nothing: the probe decides.
                _ => return None,
            };
            match self
                .word
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return transition,
                Err(now) => word = now,
            }
        }
    }

    /// The probe ended without telling anything about the store (the cost
    /// could never be taken): the next call probes instead.
    pub(crate) fn release_probe(&self) {
        // An open-until of 0 has already passed.
        let _ = self
            .word
            .compare_exchange(HALF_OPEN, OPEN, Ordering::AcqRel, Ordering::Acquire);
    }

    fn open_until(&self) -> u64 {
        let open_for = u64::try_from(self.options.open_for.as_micros()).unwrap_or(u64::MAX);
        OPEN | self.now().saturating_add(open_for).min(PAYLOAD)
    }

    /// µs since `base`.
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(PAYLOAD)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use super::*;

    fn machine(open_for: Duration) -> Machine {
        Machine::new(
            BreakerOptions::default()
                .with_failure_threshold(NonZeroU32::new(2).unwrap())
                .with_open_for(open_for),
        )
    }

    #[test]
    fn opens_after_the_threshold_and_closes_after_a_good_probe() {
        let m = machine(Duration::ZERO);
        assert_eq!(m.failed(false), None, "one failure is below the threshold");
        assert_eq!(m.state(), BreakerState::Closed);
        assert_eq!(m.failed(false), Some(Transition::Opened));
        assert_eq!(m.state(), BreakerState::Open);
        // open_for is zero: the next call is the probe, and only it passes.
        assert_eq!(m.admit(), Admit::Probe);
        assert_eq!(m.state(), BreakerState::HalfOpen);
        assert_eq!(m.admit(), Admit::Reject, "one probe at a time");
        assert_eq!(m.succeeded(), Some(Transition::Closed));
        assert_eq!(m.admit(), Admit::Call);
    }

    #[test]
    fn a_failed_probe_reopens_and_late_failures_change_nothing() {
        let m = machine(Duration::ZERO);
        m.failed(false);
        m.failed(false);
        assert_eq!(m.admit(), Admit::Probe);
        assert_eq!(m.failed(false), None, "not the probe");
        assert_eq!(m.state(), BreakerState::HalfOpen);
        assert_eq!(m.failed(true), Some(Transition::Reopened));
        assert_eq!(m.state(), BreakerState::Open);
    }

    #[test]
    fn stays_open_until_open_for_has_passed() {
        let m = machine(Duration::from_secs(3600));
        m.failed(false);
        m.failed(false);
        assert_eq!(m.admit(), Admit::Reject);
    }

    #[test]
    fn a_success_resets_the_count_and_a_released_probe_goes_again() {
        let m = machine(Duration::ZERO);
        m.failed(false);
        assert_eq!(m.succeeded(), None, "closed stays closed");
        assert_eq!(m.failed(false), None, "the count started again");
        m.failed(false);
        assert_eq!(m.admit(), Admit::Probe);
        m.release_probe();
        assert_eq!(m.state(), BreakerState::Open);
        assert_eq!(m.admit(), Admit::Probe);
    }
}
