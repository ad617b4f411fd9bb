//! How a [`RedisLimiter`](crate::RedisLimiter) connects and behaves.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{Clock, ConfigError};
use serde::{Deserialize, Serialize};

use crate::config::RedisConfig;

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// One server (or a primary behind a proxy), by URL:
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS
    /// with the `tls-rustls` feature.
    Standalone(String),
    /// A Redis Cluster, by the URLs of some of its nodes (any reachable one
    /// is enough to discover the rest).
    Cluster(Vec<String>),
}

/// How requests reach a standalone server.
///
/// In configuration: `"multiplexed"` or, with the `pool` feature,
/// `"pool"`. Without the feature, `"pool"` is refused with an error that
/// says to enable it.
///
/// # Examples
///
/// ```
/// use ratelimit_redis::ConnectionMode;
///
/// let mode: ConnectionMode = serde_json::from_str("\"multiplexed\"").unwrap();
/// assert_eq!(mode, ConnectionMode::Multiplexed);
/// let err = serde_json::from_str::<ConnectionMode>("\"pooled\"").unwrap_err();
/// assert!(err.to_string().contains("unknown variant `pooled`"), "{err}");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConnectionMode {
    /// One multiplexed connection, reconnected automatically: concurrent
    /// calls are pipelined on it, so they share round trips. The default:
    /// it was measured faster than the pool at every concurrency (see
    /// `BENCHMARKS.md`).
    ///
    /// With batching on (`max_batch` above 1), a request made while nothing
    /// is in flight goes at once from its own task, and those made while a
    /// call is in flight go together in the next call, in the order they
    /// were made.
    #[default]
    Multiplexed,
    /// A `deadpool-redis` pool of connections, one call at a time each.
    /// Each checkout also sends `UNWATCH` + `PING` to recycle the
    /// connection. Needs the `pool` feature.
    #[cfg(feature = "pool")]
    Pool,
}

impl ConnectionMode {
    /// The names configuration accepts, whatever the features: `pool` is
    /// listed without its feature too, as the error then says to enable it.
    const NAMES: &'static [&'static str] = &["multiplexed", "pool"];
}

// By hand rather than derived: without the `pool` feature, the derive
// would refuse `"pool"` as an "unknown variant", which reads as a typo
// rather than as a feature left off.
impl<'de> Deserialize<'de> for ConnectionMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match name.as_str() {
            "multiplexed" => Ok(Self::Multiplexed),
            #[cfg(feature = "pool")]
            "pool" => Ok(Self::Pool),
            #[cfg(not(feature = "pool"))]
            "pool" => Err(serde::de::Error::custom(
                "connection \"pool\" needs the `pool` feature of ratelimit-redis \
                 (features = [\"pool\"] in Cargo.toml); without it, use \"multiplexed\"",
            )),
            other => Err(serde::de::Error::unknown_variant(other, Self::NAMES)),
        }
    }
}

/// Everything a [`RedisLimiter`](crate::RedisLimiter) needs besides its
/// policy.
///
/// Built in code from a [`Target`] with `with_*` methods, or deserialized
/// from configuration (see [`RedisConfig`] for the fields).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_redis::RedisOptions;
///
/// let options = RedisOptions::standalone("redis://127.0.0.1:6379")
///     .with_prefix("api:")
///     .with_timeout(Duration::from_millis(100))
///     .with_lazy_connect(true);
/// assert_eq!(options.timeout(), Duration::from_millis(100));
/// assert!(options.lazy_connect());
///
/// let parsed: RedisOptions = toml::from_str(r#"
///     url = "redis://127.0.0.1:6379"
///     prefix = "api:"
///     timeout = "100ms"
/// "#).unwrap();
/// assert_eq!(parsed.prefix(), "api:");
/// assert!(!parsed.lazy_connect());
/// ```
#[derive(Clone)]
#[must_use]
pub struct RedisOptions {
    pub(crate) target: Target,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) connection: ConnectionMode,
    #[cfg(feature = "pool")]
    pub(crate) pool_size: NonZeroUsize,
    pub(crate) max_batch: NonZeroUsize,
    pub(crate) lazy_connect: bool,
    pub(crate) functions: bool,
    pub(crate) min_ttl: Duration,
    pub(crate) clock: Option<Arc<dyn Clock>>,
}

impl RedisOptions {
    /// The default key prefix.
    pub const DEFAULT_PREFIX: &'static str = "ratelimit:";
    /// The default per-call timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
    /// The default most requests one script call decides.
    pub const DEFAULT_MAX_BATCH: usize = 128;
    /// The largest `max_batch` accepted: a call passes its keys to one
    /// `MGET` inside Lua, whose stack holds about 8,000 values.
    pub const MAX_MAX_BATCH: usize = 1024;

    /// Options for `target` with the defaults: prefix `ratelimit:`, a 200 ms
    /// timeout, a multiplexed connection, connecting before `connect`
    /// returns, server time.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            prefix: Self::DEFAULT_PREFIX.to_string(),
            timeout: Self::DEFAULT_TIMEOUT,
            connection: ConnectionMode::default(),
            #[cfg(feature = "pool")]
            pool_size: NonZeroUsize::new(16).expect("16 is not zero"),
            max_batch: NonZeroUsize::new(Self::DEFAULT_MAX_BATCH).expect("not zero"),
            lazy_connect: false,
            functions: true,
            min_ttl: Duration::from_secs(600),
            clock: None,
        }
    }

    /// Options for one server at `url`.
    pub fn standalone(url: impl Into<String>) -> Self {
        Self::new(Target::Standalone(url.into()))
    }

    /// Options for a Redis Cluster reachable through `urls`.
    pub fn cluster<I, S>(urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(Target::Cluster(urls.into_iter().map(Into::into).collect()))
    }

    /// Prepends `prefix` to every Redis key. It may not contain `{` or `}`
    /// (checked when connecting).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The most any call waits for Redis before it returns `Err` of kind
    /// timeout. Kept here, not only in a `Timeout` layer, because the
    /// batching of calls needs each request's deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `true`: [`connect`](crate::RedisLimiter::connect) returns at once,
    /// without Redis, and a background task connects, retrying with a
    /// backoff from 100 ms doubling to 5 s; until it is connected every
    /// call fails at once with `Err` of kind backend ("Redis is not
    /// connected yet: …"). It logs its first failure at WARN and its
    /// success at INFO. Invalid options (a bad URL or prefix) still fail
    /// `connect`. Default `false`: `connect` connects and checks the
    /// deployment before it returns.
    pub fn with_lazy_connect(mut self, lazy: bool) -> Self {
        self.lazy_connect = lazy;
        self
    }

    /// `true` (the default): the limiter's Lua code is loaded as a Redis
    /// function library (`FUNCTION LOAD`, Redis 7 and later) and called
    /// with `FCALL`, so that Redis makes its Lua functions once, not on
    /// every call (`BENCHMARKS.md` measures what that saves). Where the
    /// server refuses `FUNCTION LOAD` (an older Redis, an ACL without it,
    /// a proxy that does not pass it on), the code runs as a script with
    /// `EVALSHA`, as with `false`, and the limiter logs that at INFO. A
    /// library the server lost (a restart without persistence, `FUNCTION
    /// FLUSH`) is loaded again on the call that finds it missing.
    ///
    /// A library is named `ratelimit_<policy|set>_<SHA1 of its code>`: one
    /// per algorithm for single policies, one per distinct set (a set's
    /// parameters are in its code), and new ones with each version of
    /// this crate. Redis keeps them as data until `FUNCTION DELETE` (see
    /// the crate's README). Out of memory under `noeviction`, Redis
    /// refuses an `FCALL` before it runs, even a denial or a peek, where a
    /// script fails only at its first write.
    pub fn with_functions(mut self, functions: bool) -> Self {
        self.functions = functions;
        self
    }

    /// Multiplexed connection or, with the `pool` feature, a pool
    /// (standalone only; a cluster always
    /// multiplexes one connection per node).
    pub fn with_connection_mode(mut self, mode: ConnectionMode) -> Self {
        self.connection = mode;
        self
    }

    /// The most connections of a [`ConnectionMode::Pool`] (default 16).
    /// Needs the `pool` feature.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use ratelimit_redis::{ConnectionMode, RedisOptions};
    ///
    /// let options = RedisOptions::standalone("redis://127.0.0.1:6379")
    ///     .with_connection_mode(ConnectionMode::Pool)
    ///     .with_pool_size(NonZeroUsize::new(4).unwrap());
    /// assert_eq!(options.connection_mode(), ConnectionMode::Pool);
    /// assert_eq!(options.pool_size().get(), 4);
    /// ```
    #[cfg(feature = "pool")]
    pub fn with_pool_size(mut self, size: NonZeroUsize) -> Self {
        self.pool_size = size;
        self
    }

    /// The most requests one script call decides (default 128, at most
    /// [`MAX_MAX_BATCH`](Self::MAX_MAX_BATCH), checked when connecting) on
    /// a multiplexed connection to one server.
    ///
    /// Requests made while a call is in flight wait for it and then go
    /// together in the next call: one `FCALL` (or `EVALSHA`) decides each
    /// of them, atomically and in order, as if each had its own. This is what lets
    /// concurrent requests share round trips and the script's fixed cost
    /// inside Redis (see `BENCHMARKS.md`). A request made while nothing is
    /// in flight goes at once (see [`ConnectionMode::Multiplexed`]). `1`
    /// sends every request in a call of its own, pipelined on the one
    /// multiplexed connection. A pool sends one
    /// request per call, and so does a cluster, where one call may only
    /// touch keys of one slot.
    pub fn with_max_batch(mut self, max_batch: NonZeroUsize) -> Self {
        self.max_batch = max_batch;
        self
    }

    /// Reads time from `clock` instead of the server's `TIME` (tests,
    /// replay, simulation): the scripts receive `now` as an argument.
    ///
    /// Keys still expire, but an injected clock's timeline is not the
    /// server's, so their TTL is the time left on that clock and at least
    /// [`with_min_ttl`](Self::with_min_ttl). Decisions are exact while the
    /// clock stays below
    /// [`MAX_TIMESTAMP_US`](ratelimit_core::MAX_TIMESTAMP_US) (the year
    /// 2112), as everywhere in the workspace.
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The least TTL of a key written under an injected clock (default 10
    /// minutes): a manual clock may stand still while real time passes.
    pub fn with_min_ttl(mut self, min_ttl: Duration) -> Self {
        self.min_ttl = min_ttl;
        self
    }

    /// Where Redis is.
    #[must_use]
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The key prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The per-call timeout.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether `connect` returns before Redis is reached.
    #[must_use]
    pub fn lazy_connect(&self) -> bool {
        self.lazy_connect
    }

    /// Whether a policy set is called as a Redis function where the server
    /// allows it (see [`with_functions`](Self::with_functions)).
    #[must_use]
    pub fn functions(&self) -> bool {
        self.functions
    }

    /// The connection mode.
    #[must_use]
    pub fn connection_mode(&self) -> ConnectionMode {
        self.connection
    }

    /// The most connections of a pool. Needs the `pool` feature.
    #[cfg(feature = "pool")]
    #[must_use]
    pub fn pool_size(&self) -> NonZeroUsize {
        self.pool_size
    }

    /// The most requests one script call decides.
    #[must_use]
    pub fn max_batch(&self) -> NonZeroUsize {
        self.max_batch
    }
}

/// Checks a `max_batch` against [`RedisOptions::MAX_MAX_BATCH`].
pub(crate) fn validate_max_batch(max_batch: NonZeroUsize) -> Result<(), ConfigError> {
    if max_batch.get() > RedisOptions::MAX_MAX_BATCH {
        return Err(ConfigError::new(
            "max_batch",
            format!(
                "{max_batch} is out of range; expected 1 to {}",
                RedisOptions::MAX_MAX_BATCH
            ),
        ));
    }
    Ok(())
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // URLs may carry passwords: show only their number.
        let targets = match &self.target {
            Target::Standalone(_) => "standalone (1 URL)".to_string(),
            Target::Cluster(urls) => format!("cluster ({} URLs)", urls.len()),
        };
        let mut f = f.debug_struct("RedisOptions");
        f.field("target", &targets)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("connection", &self.connection);
        #[cfg(feature = "pool")]
        f.field("pool_size", &self.pool_size);
        f.field("max_batch", &self.max_batch)
            .field("lazy_connect", &self.lazy_connect)
            .field("functions", &self.functions)
            .field("min_ttl", &self.min_ttl)
            .field("clock", &self.clock)
            .finish()
    }
}

impl<'de> Deserialize<'de> for RedisOptions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let config = RedisConfig::deserialize(deserializer)?;
        Self::try_from(config).map_err(serde::de::Error::custom)
    }
}
