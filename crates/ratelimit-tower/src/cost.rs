//! How much a request takes from its key's quota.

use http::request::Parts;

/// The cost of a request, taken from its key's quota when it is allowed.
///
/// A cost of `0` lets the request through without checking (and without
/// rate-limit headers): a way to exempt some routes. A cost above the
/// policy's limit can never succeed and is answered `429` without
/// `Retry-After`. Closures `Fn(&Parts) -> u64` are cost functions.
///
/// # Examples
///
/// ```
/// use http::request::Parts;
/// use ratelimit_tower::CostFunction;
///
/// let health_is_free = |parts: &Parts| u64::from(parts.uri.path() != "/health");
/// let (parts, ()) = http::Request::get("/health").body(()).unwrap().into_parts();
/// assert_eq!(health_is_free.cost(&parts), 0);
/// ```
pub trait CostFunction: Send + Sync + 'static {
    /// The cost of the request described by `parts`.
    fn cost(&self, parts: &Parts) -> u64;
}

impl<F> CostFunction for F
where
    F: Fn(&Parts) -> u64 + Send + Sync + 'static,
{
    fn cost(&self, parts: &Parts) -> u64 {
        self(parts)
    }
}

/// Every request costs one unit: the default.
///
/// # Examples
///
/// ```
/// use ratelimit_tower::{CostFunction, UnitCost};
///
/// let (parts, ()) = http::Request::new(()).into_parts();
/// assert_eq!(UnitCost.cost(&parts), 1);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitCost;

impl CostFunction for UnitCost {
    fn cost(&self, _parts: &Parts) -> u64 {
        1
    }
}
