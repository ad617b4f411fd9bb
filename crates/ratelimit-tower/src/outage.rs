//! Logging a failing limiter by its transitions, not once per request.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Whether the limiter's last answer was an error: what the layer logs by
/// (one shared by every service a layer builds), and what a handler that
/// checks a limiter itself (a policy set, say) logs by too.
///
/// An outage of the store fails every request: a WARN per request would
/// bury the one line that matters. So the first error after answers logs
/// one WARN with its cause, the errors after it log at DEBUG, and the
/// first answer after errors logs one INFO with how many there were.
///
/// Relaxed ordering throughout: the flag orders nothing else, and two
/// requests racing over a transition can at worst log it twice or count
/// an error on the wrong side of it.
///
/// # Examples
///
/// ```
/// use ratelimit_tower::OutageLog;
///
/// let log = OutageLog::default();
/// log.failed(&"connection refused"); // one WARN
/// log.failed(&"connection refused"); // DEBUG
/// log.answered(); // one INFO: "rate limiter answers again", errors=2
/// ```
#[derive(Debug, Default)]
pub struct OutageLog {
    failing: AtomicBool,
    /// Errors since the outage began, reported when it ends.
    errors: AtomicU64,
}

impl OutageLog {
    /// The limiter answered (a decision of the store or of a failure
    /// policy). While healthy this is the hot path: one relaxed load.
    #[inline]
    pub fn answered(&self) {
        if self.failing.load(Relaxed) && self.failing.swap(false, Relaxed) {
            let errors = self.errors.swap(0, Relaxed);
            tracing::info!(errors, "rate limiter answers again");
        }
    }

    /// The limiter could not decide (an error or the check timeout);
    /// `cause` says why and must name no key (an error's `chain()` does
    /// not).
    pub fn failed(&self, cause: &dyn fmt::Display) {
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
