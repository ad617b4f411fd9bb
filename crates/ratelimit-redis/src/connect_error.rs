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
    ConnectError::new(kind, format!("Redis at {} {what} ({text})", redact(place))).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://:s3cret@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact("rediss://app:s3cret@h:1"), "rediss://app:***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
