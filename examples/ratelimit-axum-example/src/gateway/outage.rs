//! Logging a failing set limiter by its transitions, not once per request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Whether the set limiter's last answer was an error: the first error
/// logs one WARN with its cause, the errors after it DEBUG, and the first
/// answer after them one INFO with their count, as the single-policy
/// middleware does. Relaxed ordering: the flag orders nothing else.
#[derive(Debug, Default)]
pub(crate) struct Outage {
    failing: AtomicBool,
    errors: AtomicU64,
}

impl Outage {
    /// The limiter answered.
    pub(crate) fn answered(&self) {
        if self.failing.load(Relaxed) && self.failing.swap(false, Relaxed) {
            let errors = self.errors.swap(0, Relaxed);
            tracing::info!(errors, "rate limiter answers again");
        }
    }

    /// The limiter could not decide; `cause` says why (it names no key).
    pub(crate) fn failed(&self, cause: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Relaxed);
        if self.failing.swap(true, Relaxed) {
            tracing::debug!(error = %cause, "rate limiter failed; answering 503");
        } else {
            tracing::warn!(
                error = %cause,
                "rate limiter failed; answering 503 until it answers again"
            );
        }
    }
}
