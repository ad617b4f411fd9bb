//! The one place that picks the rate-limit backend.

use std::sync::Arc;

use anyhow::bail;
use ratelimit_core::Limiter;
use ratelimit_memory::MemoryLimiter;

use crate::{BackendKind, Config};

/// The limiter the configuration asks for.
///
/// Memory (the default): `ratelimit-memory`'s `MemoryLimiter`, which
/// forgets idle keys by itself as it goes. Redis is not wired into this
/// build yet and is refused with a clear message rather than silently
/// replaced by memory (two instances would then each allow the full limit).
///
/// # Errors
///
/// When the configured backend is not available.
///
/// # Examples
///
/// ```
/// use ratelimit_axum_example::{build_limiter, BackendKind, Config};
///
/// let limiter = build_limiter(&Config::default()).unwrap();
/// assert_eq!(limiter.policies()[0].limit(), 5);
///
/// let mut config = Config::default();
/// config.backend.kind = BackendKind::Redis;
/// config.backend.url = Some("redis://127.0.0.1:6379".into());
/// assert!(build_limiter(&config).is_err());
/// ```
pub fn build_limiter(config: &Config) -> anyhow::Result<Arc<dyn Limiter>> {
    match config.backend.kind {
        BackendKind::Memory => Ok(Arc::new(MemoryLimiter::new(config.limit))),
        BackendKind::Redis => bail!(
            "backend.kind = \"redis\" is not available in this build of the example; use the memory backend"
        ),
    }
}
