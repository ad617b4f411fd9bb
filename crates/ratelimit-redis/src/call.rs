//! One script call on a [`Transport`]: its outcomes, its timeout, its
//! metrics.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::Decision;
use tokio::time::Instant;

use crate::call_metrics::{CallMetrics, CallResult};
use crate::connection::CallError;
use crate::script::ForeignValue;
use crate::transport::{Replies, Transport};

/// Why a request got no decision from Redis.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// Redis did not answer within the request's timeout.
    Timeout,
    /// The call failed (connection, server error); shared by every request
    /// of the call.
    Call(SharedError),
    /// Redis answered, but this request's key holds a value the script did
    /// not write.
    Foreign(ForeignValue),
}

/// One call's error, handed to each request of the call.
#[derive(Debug, Clone)]
pub(crate) struct SharedError(Arc<CallError>);

impl SharedError {
    pub(crate) fn new(error: CallError) -> Self {
        Self(Arc::new(error))
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// A request's outcome: its reply (a decision, for the policy scripts).
pub(crate) type Outcome<R = Decision> = Result<R, Failure>;

/// Script calls on a transport, within a timeout, counted.
pub(crate) struct Caller<T> {
    pub(crate) transport: T,
    /// How long a request waits for its decision, queueing included.
    pub(crate) timeout: Duration,
    pub(crate) metrics: CallMetrics,
}

impl<T: Transport> Caller<T> {
    /// Decides one request in a call of its own, within the timeout.
    pub(crate) async fn run_one(&self, request: T::Request) -> Outcome<T::Reply> {
        let deadline = Instant::now() + self.timeout;
        let requests = [request];
        match tokio::time::timeout_at(deadline, self.transport.call(&requests)).await {
            Ok(result) => self
                .outcomes(result, 1)
                .pop()
                .unwrap_or(Err(Failure::Timeout)),
            Err(_) => {
                self.timed_out(1);
                Err(Failure::Timeout)
            }
        }
    }

    /// The outcomes of a call of `n` requests that returned `result`, one
    /// per request, in order; the call counted.
    pub(crate) fn outcomes(
        &self,
        result: Result<Replies<T::Reply>, CallError>,
        n: usize,
    ) -> Vec<Outcome<T::Reply>> {
        match result {
            // A transport answering another number of requests would hand
            // decisions to the wrong callers: a failed call instead.
            Ok(replies) if replies.len() == n => {
                self.metrics.call(n, CallResult::Ok);
                replies
                    .into_iter()
                    .map(|r| r.map_err(Failure::Foreign))
                    .collect()
            }
            Ok(replies) => {
                self.metrics.call(n, CallResult::Error);
                let e = format!("{} answers to a call of {n} requests", replies.len());
                let e = SharedError::new(e.into());
                std::iter::repeat_with(|| Err(Failure::Call(e.clone())))
                    .take(n)
                    .collect()
            }
            // The connection's own response timeout, as long as ours, may
            // fire first: the same timeout.
            Err(e) if is_timeout(&e) => {
                self.timed_out(n);
                std::iter::repeat_with(|| Err(Failure::Timeout))
                    .take(n)
                    .collect()
            }
            Err(e) => {
                self.metrics.call(n, CallResult::Error);
                let e = SharedError::new(e);
                std::iter::repeat_with(|| Err(Failure::Call(e.clone())))
                    .take(n)
                    .collect()
            }
        }
    }

    /// Counts a call of `n` requests given up at its deadline.
    pub(crate) fn timed_out(&self, n: usize) {
        self.metrics.call(n, CallResult::Timeout);
    }
}

/// Whether `e` is redis-rs giving up on a reply.
fn is_timeout(e: &CallError) -> bool {
    e.downcast_ref::<redis::RedisError>()
        .is_some_and(redis::RedisError::is_timeout)
}
