//! The one place that picks the rate-limit backend.

use std::sync::Arc;

use anyhow::Context as _;
use ratelimit_core::Limiter;
use ratelimit_memory::MemoryLimiter;
use ratelimit_redis::{FailurePolicy, RedisLimiter, RedisOptions};

use crate::{BackendKind, Config, FailureConfig};

/// The limiter the configuration asks for.
///
/// - Memory (the default): `ratelimit-memory`'s `MemoryLimiter`, which
///   forgets idle keys by itself as it goes.
/// - Redis: `ratelimit-redis`'s `RedisLimiter` on `backend.url` (or the
///   nodes of `backend.cluster`), so every instance of the service shares
///   one count. Its failure policy is `backend.failure`: while Redis is
///   away, `closed` denies (`429`), `open` allows, `fallback` counts in
///   this process.
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
            options =
                options
                    .with_timeout(backend.timeout)
                    .with_failure_policy(match backend.failure {
                        FailureConfig::Open => FailurePolicy::FailOpen,
                        FailureConfig::Closed => FailurePolicy::FailClosed,
                        FailureConfig::Fallback => FailurePolicy::Fallback,
                    });
            if let Some(prefix) = &backend.prefix {
                options = options.with_prefix(prefix.clone());
            }
            if let Some(max_batch) = backend.max_batch {
                options = options.with_max_batch(max_batch);
            }
            let limiter = RedisLimiter::connect(config.limit, options)
                .await
                .context("cannot start the Redis backend")?;
            Ok(Arc::new(limiter))
        }
    }
}
