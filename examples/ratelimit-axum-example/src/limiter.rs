//! The one place that picks the rate-limit backend.

use std::sync::Arc;

use anyhow::Context as _;
use ratelimit_core::{FailurePolicy, Limiter};
use ratelimit_layers::{Metered, ResilienceConfig};
use ratelimit_memory::MemoryLimiter;
use ratelimit_redis::{RedisLimiter, RedisOptions};

use crate::{BackendConfig, BackendKind, Config};

/// The limiter the service asks, and the in-process limiters behind it
/// whose size the metrics endpoint reports.
#[derive(Clone)]
pub struct Backend {
    limiter: Arc<dyn Limiter>,
    memory: Vec<(&'static str, MemoryLimiter)>,
}

impl Backend {
    /// The limiter to put in front of the routes.
    #[must_use]
    pub fn limiter(&self) -> Arc<dyn Limiter> {
        Arc::clone(&self.limiter)
    }

    /// The keys each in-process limiter holds now: `("store", n)` for the
    /// memory backend, `("fallback", n)` for the Redis backend's fallback
    /// (zero until Redis has been away under `failure = "fallback"`).
    #[must_use]
    pub fn keys_held(&self) -> Vec<(&'static str, usize)> {
        self.memory
            .iter()
            .map(|(role, m)| (*role, m.len()))
            .collect()
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("keys_held", &self.keys_held())
            .finish_non_exhaustive()
    }
}

/// The limiter the configuration asks for, with `ratelimit-layers`'
/// `Metered` outermost so every decision is counted by outcome.
///
/// - Memory (the default): `ratelimit-memory`'s `MemoryLimiter`, which
///   forgets idle keys by itself as it goes. It cannot fail to decide, so
///   it has no failure policy (`"fallback"` is refused by
///   [`Config::validate`], `"open"` changes nothing).
/// - Redis: `ratelimit-redis`'s `RedisLimiter` on `backend.url` (or the
///   nodes of `backend.cluster`), so every instance of the service shares
///   one count, wrapped by [`ResilienceConfig::wrap`]: timeout
///   `backend.timeout`, circuit breaker `backend.breaker`, failure policy
///   `backend.failure`. While Redis is away, `closed` refuses, `open`
///   allows, `fallback` counts in this process, each decision marked
///   degraded. With [`starts_degraded`](crate::BackendConfig::starts_degraded)
///   it connects in the background, so the service starts without Redis.
///
/// # Errors
///
/// When Redis cannot be reached at start-up (unless starting degraded) or
/// the configuration is refused; the message says what to fix.
///
/// # Examples
///
/// ```
/// use ratelimit_axum_example::{build_backend, Config};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let backend = build_backend(&Config::default()).await.unwrap();
/// let limiter = backend.limiter();
/// assert_eq!(limiter.policies()[0].limit(), 5);
/// assert_eq!(limiter.check_one(b"client").await.unwrap().remaining, 4);
/// assert_eq!(backend.keys_held(), [("store", 1)]);
/// # });
/// ```
pub async fn build_backend(config: &Config) -> anyhow::Result<Backend> {
    let backend = &config.backend;
    match backend.kind {
        BackendKind::Memory => {
            if backend.failure == FailurePolicy::Open {
                tracing::warn!(
                    "backend.failure = \"open\" has no effect on the memory backend: \
                     it never fails to decide"
                );
            }
            let memory = MemoryLimiter::new(config.limit);
            Ok(Backend {
                limiter: Arc::new(Metered::new(memory.clone())),
                memory: vec![("store", memory)],
            })
        }
        BackendKind::Redis => {
            let options = redis_options(backend)?;
            let store = RedisLimiter::connect(config.limit, options).await.context(
                "cannot start the Redis backend (with backend.failure = \"open\" or \
                     \"fallback\", or backend.start_degraded = true, the service starts \
                     without Redis and connects when it can)",
            )?;
            let resilience = resilience(backend)?;
            // The fallback is built here rather than by the layers, so the
            // keys it holds can be reported.
            let fallback = MemoryLimiter::new(config.limit);
            Ok(Backend {
                limiter: resilience.wrap_with_fallback(Arc::new(store), Arc::new(fallback.clone())),
                memory: vec![("fallback", fallback)],
            })
        }
    }
}

/// The Redis connection options `backend` describes (standalone or
/// cluster, timeout, lazy connect, prefix, batch size), for the
/// single-policy and the policy-set backends alike.
pub(crate) fn redis_options(backend: &BackendConfig) -> anyhow::Result<RedisOptions> {
    let mut options = match (&backend.cluster, &backend.url) {
        (Some(nodes), _) => RedisOptions::cluster(nodes.iter().cloned()),
        (None, Some(url)) => RedisOptions::standalone(url.clone()),
        (None, None) => {
            anyhow::bail!("backend.kind = \"redis\" needs backend.url or backend.cluster")
        }
    };
    options = options
        .with_timeout(backend.timeout)
        .with_lazy_connect(backend.starts_degraded());
    if let Some(prefix) = &backend.prefix {
        options = options.with_prefix(prefix.clone());
    }
    if let Some(max_batch) = backend.max_batch {
        options = options.with_max_batch(max_batch);
    }
    Ok(options)
}

/// The layers `backend` puts around a remote store: its failure policy,
/// circuit breaker and timeout.
pub(crate) fn resilience(backend: &BackendConfig) -> anyhow::Result<ResilienceConfig> {
    ResilienceConfig::default()
        .with_failure(backend.failure)
        .with_breaker(backend.breaker)
        .with_timeout(Some(backend.timeout))
        .context("invalid `backend.timeout`")
}
