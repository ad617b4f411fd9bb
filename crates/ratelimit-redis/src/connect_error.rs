//! Turning connection failures into errors that say what to fix.

use redis::{ErrorKind, RedisError};

use crate::{ConnectError, ConnectErrorKind};

/// `url` with any password replaced by `***`, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split_once(':').map_or(user_info, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

/// An option that could not be used, for `place`.
pub(crate) fn invalid_config(place: &str, e: impl std::fmt::Display) -> ConnectError {
    ConnectError::new(
        ConnectErrorKind::InvalidConfig,
        format!("invalid Redis configuration for {}: {e}", redact(place)),
    )
}

/// What a failure to reach `place` (a URL, or URLs joined by commas) means
/// for whoever configured it.
pub(crate) fn classify(place: &str, e: RedisError) -> ConnectError {
    let code = e.code().unwrap_or_default();
    let text = e.to_string();
    let (kind, what) =
        if e.kind() == ErrorKind::AuthenticationFailed || matches!(code, "WRONGPASS" | "NOAUTH") {
            (
                ConnectErrorKind::Authentication,
                "refused the credentials; check the user and password in the URL",
            )
        } else if text.contains("cluster support disabled") {
            (
                ConnectErrorKind::NotACluster,
                "is not a Redis Cluster node; configure it under `url`, not `cluster`",
            )
        } else if e.kind() == ErrorKind::InvalidClientConfig {
            (ConnectErrorKind::InvalidConfig, "is not a valid Redis URL")
        } else if text.contains("certificate") || text.contains("PEM") {
            (
                ConnectErrorKind::Tls,
                "failed the TLS handshake; check that the server's certificate chains to a CA \
                 this process trusts (the platform's store, or the file in SSL_CERT_FILE) and \
                 names the host of the URL",
            )
        } else if e.is_timeout() {
            (ConnectErrorKind::Timeout, "did not answer in time")
        } else if e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.kind() == ErrorKind::ClusterConnectionNotFound
        {
            (
                ConnectErrorKind::Unreachable,
                "cannot be reached; check the host and port and that Redis is running",
            )
        } else {
            (ConnectErrorKind::Server, "answered with an error")
        };
    // The cause is the source, not part of the message: whoever prints
    // the chain (`ErrorChain`, anyhow's `{:#}`, a log line) prints it once.
    ConnectError::new(kind, format!("Redis at {} {what}", redact(place))).with_source(Distinct(e))
}

/// A Redis error as a cause, without the repeats of its own chain: an I/O
/// failure's `RedisError` prints the `io::Error` it wraps, and then has
/// that same error as its source, so a chain would read "Connection
/// refused (os error 111): Connection refused (os error 111)".
#[derive(Debug)]
struct Distinct(RedisError);

impl std::fmt::Display for Distinct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Distinct {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let own = self.0.to_string();
        let mut next = std::error::Error::source(&self.0);
        // Skip the causes this error's own text already shows.
        while let Some(cause) = next {
            if !own.contains(&cause.to_string()) {
                break;
            }
            next = cause.source();
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let err = classify("redis://h:1", RedisError::from(io));
        assert_eq!(err.kind(), ConnectErrorKind::Unreachable);
        assert!(!err.to_string().contains("Connection refused"), "{err}");
        let mut texts = vec![err.to_string()];
        let mut next = std::error::Error::source(&err);
        while let Some(cause) = next {
            texts.push(cause.to_string());
            next = cause.source();
        }
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert_eq!(texts[1], "Connection refused");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://:s3cret@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact("rediss://app:s3cret@h:1"), "rediss://app:***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
