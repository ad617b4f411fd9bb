//! The spell of decisions a failure policy makes while the store cannot:
//! shared by [`Failover`](crate::Failover) and
//! [`SetFailover`](crate::SetFailover).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use metrics::Counter;
use ratelimit_core::{Error, FailurePolicy};

/// Whether the failure policy is deciding now, how many decisions it has
/// made, and the cause of the current (or last) spell: the first failure of
/// a spell is logged at WARN with its cause, the first good answer after it
/// at INFO, never one line per request.
pub(crate) struct Outage {
    failure: FailurePolicy,
    /// Whether the last answer was degraded: transitions are logged.
    now: AtomicBool,
    total: AtomicU64,
    /// The cause of the current (or last) spell, formatted once when it
    /// started.
    last_error: Mutex<Option<String>>,
    /// `ratelimit_degraded_decisions_total{failure}`.
    counter: Counter,
}

impl Outage {
    /// No spell yet; registers the decisions counter with the current
    /// metrics recorder.
    pub(crate) fn new(failure: FailurePolicy) -> Self {
        Self {
            failure,
            now: AtomicBool::new(false),
            total: AtomicU64::new(0),
            last_error: Mutex::new(None),
            counter: metrics::counter!(
                "ratelimit_degraded_decisions_total",
                "failure" => failure.as_str()
            ),
        }
    }

    /// The store answered: ends a spell, logging it once.
    #[inline]
    pub(crate) fn ended(&self) {
        // One load on the healthy path; the swap makes one caller the one
        // that logs.
        if self.now.load(Ordering::Relaxed) && self.now.swap(false, Ordering::AcqRel) {
            tracing::info!(
                failure = %self.failure,
                "rate-limit store deciding again: decisions are no longer degraded"
            );
        }
    }

    /// The store failed with `error`: begins a spell if none is on,
    /// logging `message` and the cause once.
    pub(crate) fn began(&self, error: &Error, message: &str) {
        if !self.now.load(Ordering::Relaxed) && !self.now.swap(true, Ordering::AcqRel) {
            let text = error.chain().to_string();
            tracing::warn!(error = %text, failure = %self.failure, "{message}");
            *self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(text);
        }
    }

    /// Counts one decision the failure policy made.
    pub(crate) fn decided(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.counter.increment(1);
    }

    /// How many decisions the failure policy has made.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Whether a spell is on.
    pub(crate) fn is_on(&self) -> bool {
        self.now.load(Ordering::Relaxed)
    }

    /// The cause of the current (or last) spell, as logged.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
