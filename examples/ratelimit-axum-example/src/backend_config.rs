//! `[backend]`: where the counters live and what happens when that store
//! fails.

use std::num::NonZeroUsize;
use std::time::Duration;

use ratelimit_core::FailurePolicy;
use ratelimit_layers::BreakerOptions;
use serde::Deserialize;

use crate::config::duration;
use crate::SecretUrl;

/// `[backend]`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_axum_example::{BackendKind, Config};
/// use ratelimit_core::FailurePolicy;
///
/// let config = Config::from_toml_str(r#"
/// [backend]
/// kind = "redis"
/// url = "redis://127.0.0.1:6380"
/// failure = "open"
/// breaker = { failure_threshold = 2, open_for = "500ms" }
/// "#).unwrap();
/// let backend = &config.backend;
/// assert_eq!(backend.kind, BackendKind::Redis);
/// assert_eq!(backend.failure, FailurePolicy::Open);
/// assert_eq!(backend.breaker.open_for, Duration::from_millis(500));
/// assert!(backend.starts_degraded(), "open starts without Redis by default");
///
/// let closed = Config::from_toml_str("[backend]\nfailure = \"closed\"\n").unwrap();
/// assert!(!closed.backend.starts_degraded(), "closed wants Redis at start-up");
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `"memory"` (default) or `"redis"`.
    #[serde(default)]
    pub kind: BackendKind,
    /// The Redis URL (`redis://host:6379`); also `--redis-url`/`REDIS_URL`.
    /// A password in it is never printed.
    #[serde(default)]
    pub url: Option<SecretUrl>,
    /// Or the node URLs of a Redis Cluster.
    #[serde(default)]
    pub cluster: Option<Vec<SecretUrl>>,
    /// The Redis key prefix (default `ratelimit:`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// When Redis cannot decide: `"closed"` (default: refuse with `503`),
    /// `"open"` (let requests through) or `"fallback"` (count in this
    /// process until Redis is back). `ratelimit-core`'s spelling
    /// (`"fail_closed"`/`"fail_open"` are accepted too). The memory
    /// backend has no store to lose: `"fallback"` is refused there and
    /// `"open"` has no effect.
    #[serde(default)]
    pub failure: FailurePolicy,
    /// Redis only: the circuit breaker, `{ failure_threshold = 3,
    /// open_for = "1s" }` by default. While it is open, checks fail at once
    /// without waiting for Redis; `open_for` is also the `Retry-After` of
    /// a fail-closed `503`.
    #[serde(default)]
    pub breaker: BreakerOptions,
    /// Redis only: whether the service starts while Redis is unreachable,
    /// answering with the failure policy until Redis is reached in the
    /// background. Unset: yes for `"open"` and `"fallback"`, no for
    /// `"closed"` (a start-up error says Redis is missing).
    #[serde(default)]
    pub start_degraded: Option<bool>,
    /// The longest wait for one check, e.g. `"200ms"`.
    #[serde(default = "default_check_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Redis only: the most checks one script call decides (default 128;
    /// `1` sends one call per check).
    #[serde(default)]
    pub max_batch: Option<NonZeroUsize>,
}

/// The counter store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// In this process.
    #[default]
    Memory,
    /// A Redis server shared by every instance.
    Redis,
}

impl BackendConfig {
    /// Whether the Redis backend connects in the background, so the
    /// service starts (degraded) without Redis: `start_degraded` if set,
    /// else whether the failure policy lets traffic through without Redis.
    #[must_use]
    pub fn starts_degraded(&self) -> bool {
        self.start_degraded.unwrap_or(match self.failure {
            // Refusing everyone from the first request is rarely what a
            // fresh deployment wants: failing to start says so louder.
            FailurePolicy::Closed => false,
            FailurePolicy::Open | FailurePolicy::Fallback => true,
        })
    }
}

pub(crate) fn default_check_timeout() -> Duration {
    Duration::from_millis(200)
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            kind: BackendKind::Memory,
            url: None,
            cluster: None,
            prefix: None,
            failure: FailurePolicy::Closed,
            breaker: BreakerOptions::default(),
            start_degraded: None,
            timeout: default_check_timeout(),
            max_batch: None,
        }
    }
}
