//! Why a [`RedisLimiter`](crate::RedisLimiter) could not be built.

use std::error::Error as StdError;
use std::fmt;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A limiter that could not be built: bad options, or a Redis that is not
/// there, refuses the credentials, or is not what the options say.
///
/// # Examples
///
/// ```
/// use ratelimit_redis::{ConnectError, ConnectErrorKind};
///
/// let err = ConnectError::new(ConnectErrorKind::NotACluster, "redis://127.0.0.1:6379 is not a cluster node");
/// assert!(err.is_config_mismatch());
/// assert_eq!(err.to_string(), "redis://127.0.0.1:6379 is not a cluster node");
/// ```
#[derive(Debug)]
pub struct ConnectError {
    kind: ConnectErrorKind,
    message: String,
    source: Option<BoxError>,
}

/// The kind of a [`ConnectError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectErrorKind {
    /// The options are invalid (a prefix with braces, a bad URL, …).
    InvalidConfig,
    /// No server answered at the address (refused, unreachable).
    Unreachable,
    /// The server refused the credentials (or wants some).
    Authentication,
    /// Cluster URLs were given, but the server is not a cluster node.
    NotACluster,
    /// A standalone URL was given, but the server is a cluster node.
    IsACluster,
    /// The TLS handshake failed: the server's certificate is not trusted
    /// or does not name the host, or the trust store could not be read.
    Tls,
    /// Redis did not answer within the timeout.
    Timeout,
    /// Redis answered with another error.
    Server,
}

impl ConnectError {
    /// An error of `kind` described by `message`.
    #[must_use]
    pub fn new(kind: ConnectErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// The same error, keeping its cause as [`source`](StdError::source).
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What went wrong.
    #[must_use]
    pub fn kind(&self) -> ConnectErrorKind {
        self.kind
    }

    /// True when the server is not the kind of deployment the options name
    /// (cluster vs standalone).
    #[must_use]
    pub fn is_config_mismatch(&self) -> bool {
        matches!(
            self.kind,
            ConnectErrorKind::NotACluster | ConnectErrorKind::IsACluster
        )
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for ConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}
