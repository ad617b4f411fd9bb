//! The one place that picks the rate-limit backend.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use ratelimit_core::{Limiter, ReferenceLimiter};

use crate::{BackendKind, Config};

/// The limiter the configuration asks for.
///
/// Memory: `ratelimit-core`'s `ReferenceLimiter`, its idle keys purged
/// every window by a background task (so this must run inside a Tokio
/// runtime). Redis is not wired into this build yet and is refused with a
/// clear message rather than silently replaced.
///
/// # Errors
///
/// When the configured backend is not available.
pub fn build_limiter(config: &Config) -> anyhow::Result<Arc<dyn Limiter>> {
    match config.backend.kind {
        BackendKind::Memory => {
            let limiter = Arc::new(ReferenceLimiter::new(config.limit));
            spawn_purge(Arc::downgrade(&limiter), config.limit.window());
            Ok(limiter)
        }
        BackendKind::Redis => bail!(
            "backend.kind = \"redis\" is not available in this build of the example; use the memory backend"
        ),
    }
}

/// Forgets idle keys once per window until the limiter is dropped, so
/// memory follows the active clients rather than every client ever seen.
fn spawn_purge(limiter: std::sync::Weak<ReferenceLimiter>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match limiter.upgrade() {
                Some(limiter) => {
                    let purged = limiter.purge_idle();
                    tracing::debug!(purged, "purged idle rate-limit keys");
                }
                None => return,
            }
        }
    });
}
