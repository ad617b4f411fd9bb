//! What the script calls do, through the `metrics` facade.

use metrics::{Counter, Histogram};

/// The handles of the Redis metrics, registered once per limiter (when it
/// connects) rather than looked up per call:
///
/// - counter `ratelimit_redis_calls_total{result}`, one per script call,
///   `result` one of `ok` (Redis answered, whatever each request's fate),
///   `error` and `timeout`;
/// - histogram `ratelimit_redis_batch_size`: how many requests each script
///   call decided.
#[derive(Debug, Clone)]
pub(crate) struct CallMetrics {
    ok: Counter,
    error: Counter,
    timeout: Counter,
    batch_size: Histogram,
}

/// How a script call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallResult {
    Ok,
    Error,
    Timeout,
}

impl CallMetrics {
    pub(crate) fn new() -> Self {
        let calls = |result: &'static str| metrics::counter!("ratelimit_redis_calls_total", "result" => result);
        Self {
            ok: calls("ok"),
            error: calls("error"),
            timeout: calls("timeout"),
            batch_size: metrics::histogram!("ratelimit_redis_batch_size"),
        }
    }

    /// One script call of `requests` requests ended with `result`.
    pub(crate) fn call(&self, requests: usize, result: CallResult) {
        #[allow(clippy::cast_precision_loss)] // at most MAX_MAX_BATCH
        self.batch_size.record(requests as f64);
        match result {
            CallResult::Ok => &self.ok,
            CallResult::Error => &self.error,
            CallResult::Timeout => &self.timeout,
        }
        .increment(1);
    }
}
