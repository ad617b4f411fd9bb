//! Why a call got no decision from Redis: the causes inside a
//! [`ratelimit_core::Error`].

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::ConnectError;

/// A lazily connecting limiter has not reached Redis yet.
#[derive(Debug, Clone)]
pub(crate) struct NotConnected(pub(crate) Option<Arc<ConnectError>>);

impl fmt::Display for NotConnected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => f.write_str("Redis is not connected yet"),
            None => f.write_str("Redis is not connected yet: the first attempt is under way"),
        }
    }
}

impl StdError for NotConnected {
    /// The last attempt's failure: an error chain reads `Redis is not
    /// connected yet: <why>`.
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.as_deref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// Redis did not answer within the limiter's timeout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimedOut(pub(crate) Duration);

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redis did not answer within {:?}", self.0)
    }
}

impl StdError for TimedOut {}
