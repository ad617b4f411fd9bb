//! The serde form of [`RedisOptions`].

use std::num::NonZeroUsize;
use std::time::Duration;

use ratelimit_core::{parse_duration, ConfigError};
use serde::{Deserialize, Deserializer, Serialize};

use crate::keys::validate_prefix;
use crate::options::{validate_max_batch, ConnectionMode, RedisOptions, Target};

/// The flat, human-written form of [`RedisOptions`], as it appears in a
/// TOML, YAML or JSON file. [`RedisOptions`] deserializes through it and
/// validates.
///
/// | field | meaning |
/// |---|---|
/// | `url` | one server: `"redis://[user:password@]host:port[/db]"` (`rediss://` for TLS) |
/// | `cluster` | or a Redis Cluster: a list of node URLs |
/// | `prefix` | key prefix, default `"ratelimit:"`; no braces |
/// | `timeout` | per call, default `"200ms"` |
/// | `connection` | `"multiplexed"` (default) or `"pool"` (feature `pool`) |
/// | `pool_size` | connections of a pool, default 16 (feature `pool`) |
/// | `max_batch` | most requests one script call decides, default 128; 1: one call per request |
/// | `lazy_connect` | `true`: connect in the background, failing calls until connected; default `false` |
/// | `functions` | `true` (default): call a policy set as a Redis function where the server allows it; `false`: as a script |
///
/// What happens when Redis cannot decide is no longer the backend's to
/// say: the keys `failure`, `breaker`, `breaker_threshold`,
/// `breaker_open_for` and `deny_cache` are refused with an error pointing
/// to the resilience layers (`ratelimit-layers`' `ResilienceConfig`).
///
/// Without the `pool` feature, `connection = "pool"` and `pool_size` are
/// refused with an error that says to enable it.
///
/// # Examples
///
/// ```
/// use ratelimit_redis::RedisOptions;
///
/// let options: RedisOptions = serde_json::from_str(r#"{
///     "cluster": ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"],
///     "timeout": "50ms"
/// }"#).unwrap();
/// assert_eq!(options.timeout().as_millis(), 50);
///
/// let err = toml::from_str::<RedisOptions>(r#"
///     url = "redis://127.0.0.1"
///     timeout = "50"
/// "#).unwrap_err();
/// assert!(err.to_string().contains("invalid `timeout`: \"50\" is missing a unit"), "{err}");
///
/// let moved = toml::from_str::<RedisOptions>(r#"
///     url = "redis://127.0.0.1"
///     failure = "fail_open"
/// "#).unwrap_err();
/// assert!(moved.to_string().contains("moved to the resilience layers"), "{moved}");
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
    /// The key prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The per-call timeout, e.g. `"200ms"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Multiplexed connection or (feature `pool`) pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionMode>,
    /// The most connections of a pool. Needs the `pool` feature.
    #[cfg(feature = "pool")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<usize>,
    // Read without the `pool` feature only to refuse it with an error that
    // says to enable the feature, not "unknown field".
    #[cfg(not(feature = "pool"))]
    #[serde(default, skip_serializing)]
    pool_size: Option<Moved>,
    /// The most requests one script call decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<usize>,
    /// Connect in the background instead of in `connect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lazy_connect: Option<bool>,
    /// Call a policy set as a Redis function where the server allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<bool>,
    // Keys of the failure handling that moved to `ratelimit-layers`: read
    // only to refuse them with an error that says where they went.
    #[serde(default, skip_serializing)]
    failure: Option<Moved>,
    #[serde(default, skip_serializing)]
    breaker: Option<Moved>,
    #[serde(default, skip_serializing)]
    breaker_threshold: Option<Moved>,
    #[serde(default, skip_serializing)]
    breaker_open_for: Option<Moved>,
    #[serde(default, skip_serializing)]
    deny_cache: Option<Moved>,
}

/// Any value of a key that moved elsewhere, or that needs a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Moved;

impl<'de> Deserialize<'de> for Moved {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| Self)
    }
}

impl RedisConfig {
    /// The first key given that moved to the resilience layers.
    fn moved_key(&self) -> Option<&'static str> {
        [
            ("failure", self.failure),
            ("breaker", self.breaker),
            ("breaker_threshold", self.breaker_threshold),
            ("breaker_open_for", self.breaker_open_for),
            ("deny_cache", self.deny_cache),
        ]
        .into_iter()
        .find_map(|(key, value)| value.map(|Moved| key))
    }
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
        if let Some(key) = c.moved_key() {
            return Err(ConfigError::new(
                key,
                "moved to the resilience layers: Redis no longer decides for itself when it \
                 cannot answer (it returns an error); set `failure`, `timeout`, `breaker` and \
                 `deny_cache` in a `ratelimit_layers::ResilienceConfig` that wraps the limiter",
            ));
        }
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
        let mut options = RedisOptions::new(target);
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
        #[cfg(feature = "pool")]
        if let Some(size) = c.pool_size {
            options = options.with_pool_size(non_zero("pool_size", size)?);
        }
        #[cfg(not(feature = "pool"))]
        if c.pool_size.is_some() {
            return Err(ConfigError::new(
                "pool_size",
                "needs the `pool` feature of ratelimit-redis (features = [\"pool\"] in \
                 Cargo.toml), as does `connection = \"pool\"`",
            ));
        }
        if let Some(max_batch) = c.max_batch {
            let max_batch = non_zero("max_batch", max_batch)?;
            validate_max_batch(max_batch)?;
            options = options.with_max_batch(max_batch);
        }
        if let Some(lazy) = c.lazy_connect {
            options = options.with_lazy_connect(lazy);
        }
        if let Some(functions) = c.functions {
            options = options.with_functions(functions);
        }
        Ok(options)
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
        let o = parse("url = \"redis://127.0.0.1\"").unwrap();
        assert_eq!(o.prefix(), RedisOptions::DEFAULT_PREFIX);
        assert_eq!(o.timeout(), RedisOptions::DEFAULT_TIMEOUT);
        assert_eq!(o.connection_mode(), ConnectionMode::Multiplexed);
        assert_eq!(o.max_batch().get(), RedisOptions::DEFAULT_MAX_BATCH);
        assert!(!o.lazy_connect());
        assert!(o.functions());
        let o = parse(
            "url = \"redis://127.0.0.1\"\nmax_batch = 1\nlazy_connect = true\nfunctions = false",
        )
        .unwrap();
        assert_eq!(o.max_batch().get(), 1);
        assert!(o.lazy_connect());
        assert!(!o.functions());
    }

    #[test]
    fn errors_name_the_field() {
        for (text, needle) in [
            ("prefix = \"a:\"", "invalid `url`: is missing"),
            ("url = \"redis://x\"\ncluster = [\"redis://y\"]", "not both"),
            ("cluster = []", "invalid `cluster`: is empty"),
            ("url = \"redis://x\"\nprefix = \"a{b}\"", "invalid `prefix`"),
            (
                "url = \"redis://x\"\ntimeout = \"soon\"",
                "invalid `timeout`",
            ),
            ("url = \"redis://x\"\npool_size = 0", "invalid `pool_size`"),
            ("url = \"redis://x\"\nmax_batch = 0", "invalid `max_batch`"),
            (
                "url = \"redis://x\"\nmax_batch = 1025",
                "invalid `max_batch`: 1025 is out of range; expected 1 to 1024",
            ),
            (
                "url = \"redis://x\"\nlazy_connect = \"yes\"",
                "invalid type",
            ),
            ("url = \"redis://x\"\nttl = 1", "unknown field `ttl`"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[cfg(feature = "pool")]
    #[test]
    fn pool_parses_with_its_feature() {
        let o = parse("url = \"redis://x\"\nconnection = \"pool\"\npool_size = 4").unwrap();
        assert_eq!(o.connection_mode(), ConnectionMode::Pool);
        assert_eq!(o.pool_size().get(), 4);
    }

    // The workspace's tests run with `pool` on (the self-dev-dependency);
    // this runs in a build without it, e.g. `cargo test -p ratelimit-redis
    // --lib` with the dev-dependency's `pool` removed.
    #[cfg(not(feature = "pool"))]
    #[test]
    fn pool_without_its_feature_says_to_enable_it() {
        for (text, needle) in [
            (
                "url = \"redis://x\"\nconnection = \"pool\"",
                "connection \"pool\" needs the `pool` feature of ratelimit-redis",
            ),
            (
                "url = \"redis://x\"\npool_size = 4",
                "invalid `pool_size`: needs the `pool` feature of ratelimit-redis",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        let err = parse("url = \"redis://x\"\nconnection = \"pooled\"").unwrap_err();
        assert!(err.contains("unknown variant `pooled`"), "{err}");
    }

    #[test]
    fn failure_handling_keys_say_where_they_moved() {
        for (key, value) in [
            ("failure", "\"fail_closed\""),
            ("breaker", "{ failure_threshold = 3 }"),
            ("breaker_threshold", "3"),
            ("breaker_open_for", "\"1s\""),
            ("deny_cache", "1000"),
        ] {
            let err = parse(&format!("url = \"redis://x\"\n{key} = {value}")).unwrap_err();
            assert!(
                err.contains(&format!("invalid `{key}`: moved to the resilience layers"))
                    && err.contains("ratelimit_layers::ResilienceConfig"),
                "{key}: {err}"
            );
        }
    }
}
