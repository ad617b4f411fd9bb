//! The one place that builds a tier's set limiter.

use std::sync::Arc;

use ratelimit_core::{PolicySet, ReferenceSetLimiter, SetLimiter};

/// Builds the limiter of one tier's set: how the gateway counts.
pub type SetLimiterFactory = Arc<dyn Fn(PolicySet) -> Arc<dyn SetLimiter> + Send + Sync>;

/// The set limiter of `set` for the service.
///
/// Today `ratelimit-core`'s in-process `ReferenceSetLimiter` (one mutex,
/// the reference math). The memory and Redis set backends replace it here,
/// and only here: everything else sees an `Arc<dyn SetLimiter>`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_axum_example::build_set_limiter;
/// use ratelimit_core::{NamedLimit, Policy, PolicySet};
///
/// let set = PolicySet::new(vec![
///     NamedLimit::new("requests", Policy::fixed_window(5, Duration::from_secs(30)).unwrap()).unwrap(),
/// ]).unwrap();
/// let limiter = build_set_limiter(set);
/// assert_eq!(limiter.policy_set().len(), 1);
/// ```
#[must_use]
pub fn build_set_limiter(set: PolicySet) -> Arc<dyn SetLimiter> {
    Arc::new(ReferenceSetLimiter::new(set))
}

/// [`build_set_limiter`] as a [`SetLimiterFactory`].
#[must_use]
pub fn default_set_limiter_factory() -> SetLimiterFactory {
    Arc::new(build_set_limiter)
}
