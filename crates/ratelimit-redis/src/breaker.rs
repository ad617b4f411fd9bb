//! The circuit breaker: stop waiting on a dead server, probe for its return.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::options::BreakerOptions;

#[derive(Debug, Clone, Copy)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everyone else keeps failing fast.
    Probing,
}

/// Closed → (threshold consecutive failures) → Open → (`open_for` later,
/// one call let through) → Probing → Closed on success, Open on failure.
#[derive(Debug)]
pub(crate) struct Breaker {
    options: BreakerOptions,
    state: Mutex<State>,
}

/// Leave to call Redis. A probe that is dropped before it reports (its
/// caller gave up) counts as a failure, so the breaker never stays stuck in
/// `Probing`.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Breaker {
    pub(crate) fn new(options: BreakerOptions) -> Self {
        Self {
            options,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Leave to call Redis, or `None` while the breaker is open.
    pub(crate) fn permit(&self) -> Option<Permit<'_>> {
        let mut state = self.state();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } if Instant::now() >= until => {
                *state = State::Probing;
                true
            }
            State::Open { .. } | State::Probing => return None,
        };
        Some(Permit {
            breaker: self,
            probe,
            reported: false,
        })
    }

    /// Whether calls currently skip Redis (open or probing).
    pub(crate) fn is_open(&self) -> bool {
        !matches!(*self.state(), State::Closed { .. })
    }

    fn success(&self) {
        *self.state() = State::Closed { failures: 0 };
    }

    fn failure(&self, probe: bool) {
        let mut state = self.state();
        let open = State::Open {
            until: Instant::now() + self.options.open_for,
        };
        *state = match *state {
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.options.failure_threshold.get() {
                    open
                } else {
                    State::Closed { failures }
                }
            }
            State::Probing if probe => open,
            // Another call's late failure while open or probing changes
            // nothing: the probe decides.
            other => other,
        };
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is a single assignment: a panic cannot leave the
        // state half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Permit<'_> {
    /// Redis answered.
    pub(crate) fn succeeded(mut self) {
        self.reported = true;
        self.breaker.success();
    }

    /// Redis failed or timed out.
    pub(crate) fn failed(mut self) {
        self.reported = true;
        self.breaker.failure(self.probe);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.breaker.failure(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use super::*;

    fn breaker(open_for: Duration) -> Breaker {
        Breaker::new(BreakerOptions {
            failure_threshold: NonZeroU32::new(2).unwrap(),
            open_for,
        })
    }

    #[test]
    fn opens_after_the_threshold_and_closes_after_a_good_probe() {
        let b = breaker(Duration::ZERO);
        b.permit().unwrap().failed();
        assert!(!b.is_open(), "one failure is below the threshold");
        b.permit().unwrap().failed();
        assert!(b.is_open());
        // open_for is zero: the next call is the probe, and only it passes.
        let probe = b.permit().unwrap();
        assert!(b.permit().is_none(), "one probe at a time");
        probe.succeeded();
        assert!(!b.is_open());
    }

    #[test]
    fn stays_open_until_open_for_has_passed() {
        let b = breaker(Duration::from_secs(3600));
        b.permit().unwrap().failed();
        b.permit().unwrap().failed();
        assert!(b.permit().is_none());
    }

    #[test]
    fn a_dropped_probe_reopens() {
        let b = breaker(Duration::ZERO);
        b.permit().unwrap().failed();
        b.permit().unwrap().failed();
        drop(b.permit().unwrap());
        assert!(b.is_open());
        assert!(b.permit().is_some(), "and probes again later");
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = breaker(Duration::ZERO);
        b.permit().unwrap().failed();
        b.permit().unwrap().succeeded();
        b.permit().unwrap().failed();
        assert!(!b.is_open());
    }
}
