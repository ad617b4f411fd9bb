//! The serde form of [`RedisOptions`].

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use ratelimit_core::{parse_duration, ConfigError};
use serde::{Deserialize, Serialize};

use crate::keys::validate_prefix;
use crate::options::{
    validate_max_batch, BreakerOptions, ConnectionMode, FailurePolicy, RedisOptions, Target,
};

/// The flat, human-written form of [`RedisOptions`], as it appears in a
/// TOML, YAML or JSON file. [`RedisOptions`] deserializes through it and
/// validates.
///
/// | field | meaning |
/// |---|---|
/// | `url` | one server: `"redis://[user:password@]host:port[/db]"` (`rediss://` for TLS) |
/// | `cluster` | or a Redis Cluster: a list of node URLs |
/// | `failure` | **required**: `"fail_closed"`, `"fail_open"` or `"fallback"` |
/// | `prefix` | key prefix, default `"ratelimit:"`; no braces |
/// | `timeout` | per call, default `"200ms"` |
/// | `connection` | `"multiplexed"` (default) or `"pool"` |
/// | `pool_size` | connections of a pool, default 16 |
/// | `max_batch` | most requests one script call decides, default 128; 1: one call per request |
/// | `deny_cache` | entries of the local deny cache; absent: no cache |
/// | `breaker_threshold` | consecutive failures that open the breaker, default 3 |
/// | `breaker_open_for` | how long it stays open, default `"1s"` |
///
/// # Examples
///
/// ```
/// use ratelimit_redis::RedisOptions;
///
/// let options: RedisOptions = serde_json::from_str(r#"{
///     "cluster": ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"],
///     "failure": "fail_open",
///     "timeout": "50ms"
/// }"#).unwrap();
/// assert_eq!(options.timeout().as_millis(), 50);
///
/// let err = toml::from_str::<RedisOptions>(r#"
///     url = "redis://127.0.0.1"
///     failure = "fail_closed"
///     timeout = "50"
/// "#).unwrap_err();
/// assert!(err.to_string().contains("invalid `timeout`: \"50\" is missing a unit"), "{err}");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConfig {
    /// One server's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A cluster's node URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Vec<String>>,
    /// What calls do when Redis cannot decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailurePolicy>,
    /// The key prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The per-call timeout, e.g. `"200ms"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Multiplexed connection or pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionMode>,
    /// The most connections of a pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<usize>,
    /// The most requests one script call decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<usize>,
    /// Entries of the local deny cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_cache: Option<usize>,
    /// Consecutive failures that open the circuit breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_threshold: Option<u32>,
    /// How long the breaker stays open before probing, e.g. `"1s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_open_for: Option<String>,
}

/// A duration field, with errors naming it.
fn duration(field: &'static str, text: &str) -> Result<Duration, ConfigError> {
    parse_duration(text).map_err(|e| ConfigError::new(field, e.message()))
}

fn non_zero(field: &'static str, value: usize) -> Result<NonZeroUsize, ConfigError> {
    NonZeroUsize::new(value)
        .ok_or_else(|| ConfigError::new(field, "0 is out of range; expected at least 1"))
}

impl TryFrom<RedisConfig> for RedisOptions {
    type Error = ConfigError;

    fn try_from(c: RedisConfig) -> Result<Self, ConfigError> {
        let target = match (c.url, c.cluster) {
            (Some(url), None) => Target::Standalone(url),
            (None, Some(urls)) if urls.is_empty() => {
                return Err(ConfigError::new(
                    "cluster",
                    "is empty; list at least one node URL",
                ))
            }
            (None, Some(urls)) => Target::Cluster(urls),
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "url",
                    "give either `url` (one server) or `cluster` (node URLs), not both",
                ))
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "url",
                    "is missing; give `url` for one server or `cluster` for a Redis Cluster",
                ))
            }
        };
        let failure = c.failure.ok_or_else(|| {
            ConfigError::new(
                "failure",
                "is missing; choose what happens when Redis is unreachable: \
                 \"fail_closed\" (deny), \"fail_open\" (allow) or \"fallback\" (local limiter)",
            )
        })?;
        let mut options = RedisOptions::new(target).with_failure_policy(failure);
        if let Some(prefix) = c.prefix {
            validate_prefix(&prefix)?;
            options = options.with_prefix(prefix);
        }
        if let Some(text) = c.timeout {
            let timeout = duration("timeout", &text)?;
            if timeout.is_zero() {
                return Err(ConfigError::new("timeout", "must be longer than zero"));
            }
            options = options.with_timeout(timeout);
        }
        if let Some(mode) = c.connection {
            options = options.with_connection_mode(mode);
        }
        if let Some(size) = c.pool_size {
            options = options.with_pool_size(non_zero("pool_size", size)?);
        }
        if let Some(max_batch) = c.max_batch {
            let max_batch = non_zero("max_batch", max_batch)?;
            validate_max_batch(max_batch)?;
            options = options.with_max_batch(max_batch);
        }
        if let Some(entries) = c.deny_cache {
            options = options.with_deny_cache(non_zero("deny_cache", entries)?);
        }
        let mut breaker = BreakerOptions::default();
        if let Some(threshold) = c.breaker_threshold {
            breaker.failure_threshold = NonZeroU32::new(threshold).ok_or_else(|| {
                ConfigError::new(
                    "breaker_threshold",
                    "0 is out of range; expected at least 1",
                )
            })?;
        }
        if let Some(text) = c.breaker_open_for {
            breaker.open_for = duration("breaker_open_for", &text)?;
        }
        Ok(options.with_breaker(breaker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RedisOptions, String> {
        toml::from_str::<RedisOptions>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_apply() {
        let o = parse("url = \"redis://127.0.0.1\"\nfailure = \"fail_open\"").unwrap();
        assert_eq!(o.prefix(), RedisOptions::DEFAULT_PREFIX);
        assert_eq!(o.timeout(), RedisOptions::DEFAULT_TIMEOUT);
        assert_eq!(o.connection_mode(), ConnectionMode::Multiplexed);
        assert_eq!(o.failure_policy(), FailurePolicy::FailOpen);
        assert_eq!(o.max_batch().get(), RedisOptions::DEFAULT_MAX_BATCH);
        let o =
            parse("url = \"redis://127.0.0.1\"\nfailure = \"fail_open\"\nmax_batch = 1").unwrap();
        assert_eq!(o.max_batch().get(), 1);
    }

    #[test]
    fn errors_name_the_field() {
        for (text, needle) in [
            ("failure = \"fail_open\"", "invalid `url`: is missing"),
            ("url = \"redis://x\"", "invalid `failure`: is missing"),
            (
                "url = \"redis://x\"\ncluster = [\"redis://y\"]\nfailure = \"fail_open\"",
                "not both",
            ),
            (
                "cluster = []\nfailure = \"fail_open\"",
                "invalid `cluster`: is empty",
            ),
            (
                "url = \"redis://x\"\nfailure = \"fail_open\"\nprefix = \"a{b}\"",
                "invalid `prefix`",
            ),
            (
                "url = \"redis://x\"\nfailure = \"fail_open\"\ntimeout = \"soon\"",
                "invalid `timeout`",
            ),
            (
                "url = \"redis://x\"\nfailure = \"fail_open\"\npool_size = 0",
                "invalid `pool_size`",
            ),
            (
                "url = \"redis://x\"\nfailure = \"fail_open\"\nmax_batch = 0",
                "invalid `max_batch`",
            ),
            (
                "url = \"redis://x\"\nfailure = \"fail_open\"\nmax_batch = 1025",
                "invalid `max_batch`: 1025 is out of range; expected 1 to 1024",
            ),
            (
                "url = \"redis://x\"\nfailure = \"maybe\"",
                "unknown variant `maybe`",
            ),
            (
                "url = \"redis://x\"\nfailure = \"fail_open\"\nttl = 1",
                "unknown field `ttl`",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
