//! The one place that builds a tier's set limiter.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use ratelimit_core::{FailurePolicy, PolicySet, SetLimiter};
use ratelimit_layers::Metered;
use ratelimit_memory::{MemorySetLimiter, MemorySetLimiterOptions};
use ratelimit_redis::RedisSetLimiter;

use crate::limiter::{redis_options, resilience};
use crate::{BackendKind, Config};

/// Builds the limiter of one tier's set: how the gateway counts. Called
/// once per tier at start-up, and again on a reload for each tier whose
/// set changed (a tier whose set did not change keeps its limiter).
pub type SetLimiterFactory =
    Arc<dyn Fn(PolicySet) -> BoxFuture<'static, anyhow::Result<Arc<dyn SetLimiter>>> + Send + Sync>;

/// A [`SetLimiterFactory`] of a function that cannot fail nor wait (for
/// tests, and for limiters in process).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use ratelimit_axum_example::factory_of;
/// use ratelimit_core::{ReferenceSetLimiter, SetLimiter};
///
/// let factory = factory_of(|set| Arc::new(ReferenceSetLimiter::new(set)) as Arc<dyn SetLimiter>);
/// # let _ = factory;
/// ```
pub fn factory_of(
    build: impl Fn(PolicySet) -> Arc<dyn SetLimiter> + Send + Sync + 'static,
) -> SetLimiterFactory {
    Arc::new(move |set| {
        let limiter = build(set);
        Box::pin(async move { Ok(limiter) })
    })
}

/// One in-process store for every tier, through the generations of the
/// configuration: the first set makes it, every later one is a
/// [`MemorySetLimiter::reconfigured`] view of it, so a reload (or a key
/// moving to another tier) resets no one's counters.
#[derive(Clone, Default)]
struct SharedMemory(Arc<Mutex<Option<MemorySetLimiter>>>);

impl SharedMemory {
    fn limiter(&self, set: PolicySet, name: &'static str) -> MemorySetLimiter {
        let mut root = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*root {
            Some(root) => root.reconfigured(set),
            None => {
                let options = MemorySetLimiterOptions::default().with_name(name);
                let limiter = MemorySetLimiter::with_options(
                    set,
                    ratelimit_core::SystemClock::new(),
                    options,
                );
                *root = Some(limiter.clone());
                limiter
            }
        }
    }
}

/// The in-process set limiters of the memory backend, all on one store
/// (see [`MemorySetLimiter::reconfigured`]), each measured by
/// `ratelimit-layers`' `Metered` (`policy = "set"`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_axum_example::memory_set_limiter_factory;
/// use ratelimit_core::{NamedLimit, Policy, PolicySet};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let set = PolicySet::new(vec![
///     NamedLimit::new("requests", Policy::fixed_window(5, Duration::from_secs(30)).unwrap()).unwrap(),
/// ]).unwrap();
/// let factory = memory_set_limiter_factory();
/// let limiter = factory(set).await.unwrap();
/// assert_eq!(limiter.policy_set().len(), 1);
/// assert_eq!(limiter.check_set(b"k", &[1]).await.unwrap().decision.decisions[0].remaining, 4);
/// # });
/// ```
#[must_use]
pub fn memory_set_limiter_factory() -> SetLimiterFactory {
    let memory = SharedMemory::default();
    factory_of(move |set| Arc::new(Metered::for_set(memory.limiter(set, "gateway"))))
}

/// The set limiters `config`'s `[backend]` asks for.
///
/// - Memory (the default): [`memory_set_limiter_factory`].
/// - Redis (`backend.url` or `backend.cluster`, `backend.prefix`, TLS by
///   a `rediss://` URL, as for the single-policy backend): one
///   `ratelimit-redis` `RedisSetLimiter` per tier, wrapped by
///   [`ResilienceConfig::wrap_set`](ratelimit_layers::ResilienceConfig::wrap_set) (timeout `backend.timeout`, breaker
///   `backend.breaker`, failure policy `backend.failure`; its fallback an
///   in-process limiter of the same set, all tiers on one store). Each
///   policy's Redis keys are named by the policy, not the tier, so a
///   limiter built on a reload over the same prefix finds every counter
///   and lease where the last one left them.
///
/// # Errors
///
/// When the Redis options are invalid. Connecting happens when the
/// factory is called: with `backend.failure = "closed"` (and no
/// `start_degraded`) a Redis that cannot be reached fails that call.
///
/// # Examples
///
/// ```
/// use ratelimit_axum_example::{build_set_limiter_factory, Config};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let config = Config::from_toml_str(include_str!("../../gateway.toml")).unwrap();
/// let factory = build_set_limiter_factory(&config).unwrap();
/// let set = config.tiers["free"].limits.iter().cloned()
///     .map(ratelimit_core::NamedLimit::try_from).collect::<Result<Vec<_>, _>>().unwrap();
/// let limiter = factory(set.try_into().unwrap()).await.unwrap();
/// assert_eq!(limiter.policy_set().names().collect::<Vec<_>>(), ["requests", "tokens", "streams"]);
/// # });
/// ```
pub fn build_set_limiter_factory(config: &Config) -> anyhow::Result<SetLimiterFactory> {
    let backend = &config.backend;
    match backend.kind {
        BackendKind::Memory => Ok(memory_set_limiter_factory()),
        BackendKind::Redis => {
            let options = redis_options(backend)?;
            let resilience = resilience(backend)?;
            let fallback = SharedMemory::default();
            let uses_fallback = backend.failure == FailurePolicy::Fallback;
            Ok(Arc::new(move |set: PolicySet| {
                let (options, resilience, fallback) =
                    (options.clone(), resilience, fallback.clone());
                Box::pin(async move {
                    let fallback = uses_fallback.then(|| {
                        Arc::new(fallback.limiter(set.clone(), "gateway-fallback"))
                            as Arc<dyn SetLimiter>
                    });
                    let store = RedisSetLimiter::connect(set, options).await.context(
                        "cannot start the Redis set backend (with backend.failure = \"open\" \
                         or \"fallback\", or backend.start_degraded = true, the service starts \
                         without Redis and connects when it can)",
                    )?;
                    Ok(resilience.wrap_set(Arc::new(store), fallback))
                })
            }))
        }
    }
}
