//! The one place that picks the rate-limit backend.

use std::sync::Arc;

use anyhow::Context as _;
use ratelimit_core::{FailurePolicy, Limiter};
use ratelimit_layers::ResilienceConfig;
use ratelimit_memory::MemoryLimiter;
use ratelimit_redis::{RedisLimiter, RedisOptions};

use crate::{BackendKind, Config, FailureConfig};

/// The limiter the configuration asks for.
///
/// - Memory (the default): `ratelimit-memory`'s `MemoryLimiter`, which
///   forgets idle keys by itself as it goes.
/// - Redis: `ratelimit-redis`'s `RedisLimiter` on `backend.url` (or the
///   nodes of `backend.cluster`), so every instance of the service shares
///   one count. It is wrapped in `ratelimit-layers`' resilience stack
///   (timeout `backend.timeout`, circuit breaker, failure policy
///   `backend.failure`): while Redis is away, `closed` denies, `open`
///   allows, `fallback` counts in this process, each decision marked
///   degraded.
///
/// # Errors
///
/// When Redis cannot be reached or refuses the configuration; the message
/// says what to fix.
///
/// # Examples
///
/// ```
/// use ratelimit_axum_example::{build_limiter, Config};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let limiter = build_limiter(&Config::default()).await.unwrap();
/// assert_eq!(limiter.policies()[0].limit(), 5);
/// # });
/// ```
pub async fn build_limiter(config: &Config) -> anyhow::Result<Arc<dyn Limiter>> {
    let backend = &config.backend;
    match backend.kind {
        BackendKind::Memory => Ok(Arc::new(MemoryLimiter::new(config.limit))),
        BackendKind::Redis => {
            let mut options = match (&backend.cluster, &backend.url) {
                (Some(nodes), _) => RedisOptions::cluster(nodes.iter().cloned()),
                (None, Some(url)) => RedisOptions::standalone(url.clone()),
                (None, None) => {
                    anyhow::bail!("backend.kind = \"redis\" needs backend.url or backend.cluster")
                }
            };
            options = options.with_timeout(backend.timeout);
            if let Some(prefix) = &backend.prefix {
                options = options.with_prefix(prefix.clone());
            }
            if let Some(max_batch) = backend.max_batch {
                options = options.with_max_batch(max_batch);
            }
            let limiter = RedisLimiter::connect(config.limit, options)
                .await
                .context("cannot start the Redis backend")?;
            let resilience = ResilienceConfig::default()
                .with_failure(match backend.failure {
                    FailureConfig::Open => FailurePolicy::Open,
                    FailureConfig::Closed => FailurePolicy::Closed,
                    FailureConfig::Fallback => FailurePolicy::Fallback,
                })
                .with_timeout(Some(backend.timeout))
                .context("invalid `backend.timeout`")?;
            Ok(resilience.wrap(Arc::new(limiter)))
        }
    }
}
