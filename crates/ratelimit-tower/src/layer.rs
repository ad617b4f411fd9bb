//! The layer and its configuration.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use ratelimit_core::Limiter;
use tower_layer::Layer;

use crate::outage::OutageLog;
use crate::{
    ClientIp, CostFunction, KeyExtractor, PlainResponse, RateLimitHeaders, RateLimitService,
    UnitCost,
};

/// Wraps a service in a [`RateLimitService`]: each request is checked
/// against the limiter before the service sees it.
///
/// Defaults: keys from [`ClientIp::new`] (the peer address, no trusted
/// proxies), [`UnitCost`], a `429` with body `Ratelimited!` as
/// `text/plain`, a `503` when the limiter cannot decide, a `400` when the
/// request has no key, the policy named `default` in the headers, no quota
/// headers on degraded decisions, and a one-second timeout on each check.
///
/// The layer applies no failure policy of its own: a limiter that should
/// fail open, fail closed or fall back is wrapped in one (the
/// `ratelimit-layers` crate's `Failover`), and its decisions arrive marked
/// [`Decision::degraded`](ratelimit_core::Decision::degraded). The layer
/// answers those honestly (see the crate documentation); an error that
/// still reaches it is a `503`.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use http::StatusCode;
/// use ratelimit_core::{Limiter, Policy, ReferenceLimiter};
/// use ratelimit_tower::{ClientIp, PlainResponse, RateLimitLayer};
///
/// let policy = Policy::fixed_window(5, Duration::from_secs(30)).unwrap();
/// let limiter: Arc<dyn Limiter> = Arc::new(ReferenceLimiter::new(policy));
/// let layer = RateLimitLayer::new(limiter)
///     .with_key_extractor(ClientIp::new().with_trusted_proxies(["10.0.0.0/8".parse().unwrap()]))
///     .with_denied_response(PlainResponse::new(StatusCode::TOO_MANY_REQUESTS, "Slow down"));
/// assert_eq!(layer.denied_response().body(), "Slow down");
/// assert!(!layer.degraded_headers());
/// ```
#[derive(Clone)]
pub struct RateLimitLayer<K = ClientIp, C = UnitCost> {
    settings: Settings<K, C>,
}

/// Everything a [`RateLimitService`] needs besides its inner service;
/// shared behind an `Arc` by the clones of one service.
#[derive(Clone)]
pub(crate) struct Settings<K, C> {
    pub(crate) limiter: Arc<dyn Limiter>,
    pub(crate) key: K,
    pub(crate) cost: C,
    pub(crate) denied: PlainResponse,
    pub(crate) missing_key: PlainResponse,
    pub(crate) unavailable: PlainResponse,
    pub(crate) headers: RateLimitHeaders,
    pub(crate) degraded_headers: bool,
    pub(crate) check_timeout: Option<Duration>,
    /// Shared by every service of this layer (and its clones), so one
    /// outage logs one WARN however many routes the layer wraps.
    pub(crate) outage: Arc<OutageLog>,
}

impl RateLimitLayer {
    /// A layer over `limiter` with the defaults listed on the type.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use ratelimit_core::{Policy, ReferenceLimiter};
    ///
    /// let policy = Policy::fixed_window(5, Duration::from_secs(30)).unwrap();
    /// let layer = ratelimit_tower::RateLimitLayer::new(Arc::new(ReferenceLimiter::new(policy)));
    /// assert_eq!(layer.denied_response().body(), "Ratelimited!");
    /// assert_eq!(layer.check_timeout(), Some(Duration::from_secs(1)));
    /// ```
    #[must_use]
    pub fn new(limiter: Arc<dyn Limiter>) -> Self {
        Self {
            settings: Settings {
                limiter,
                key: ClientIp::new(),
                cost: UnitCost,
                denied: PlainResponse::new(StatusCode::TOO_MANY_REQUESTS, "Ratelimited!"),
                missing_key: PlainResponse::new(
                    StatusCode::BAD_REQUEST,
                    "Could not identify the client.",
                ),
                unavailable: PlainResponse::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Rate limiting is unavailable; try again shortly.",
                ),
                headers: RateLimitHeaders::default(),
                degraded_headers: false,
                check_timeout: Some(Duration::from_secs(1)),
                outage: Arc::default(),
            },
        }
    }
}

impl<K, C> RateLimitLayer<K, C> {
    /// Keys requests with `key` instead.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use ratelimit_core::{Policy, ReferenceLimiter};
    /// # let limiter = Arc::new(ReferenceLimiter::new(Policy::fixed_window(5, Duration::from_secs(30)).unwrap()));
    /// let layer = ratelimit_tower::RateLimitLayer::new(limiter)
    ///     .with_key_extractor(|parts: &http::request::Parts| {
    ///         parts.headers.get("x-api-key").map(|v| v.as_bytes().to_vec())
    ///     });
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn with_key_extractor<K2: KeyExtractor>(self, key: K2) -> RateLimitLayer<K2, C> {
        self.rebuild(|_| key, |cost| cost)
    }

    /// Prices requests with `cost` instead of one unit each.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use ratelimit_core::{Policy, ReferenceLimiter};
    /// # let limiter = Arc::new(ReferenceLimiter::new(Policy::fixed_window(5, Duration::from_secs(30)).unwrap()));
    /// let layer = ratelimit_tower::RateLimitLayer::new(limiter)
    ///     .with_cost(|parts: &http::request::Parts| if parts.method == http::Method::POST { 2 } else { 1 });
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn with_cost<C2: CostFunction>(self, cost: C2) -> RateLimitLayer<K, C2> {
        self.rebuild(|key| key, |_| cost)
    }

    /// The same settings with the key extractor and the cost function
    /// mapped: the one place the type-changing builders list every field.
    fn rebuild<K2, C2>(
        self,
        key: impl FnOnce(K) -> K2,
        cost: impl FnOnce(C) -> C2,
    ) -> RateLimitLayer<K2, C2> {
        let s = self.settings;
        RateLimitLayer {
            settings: Settings {
                limiter: s.limiter,
                key: key(s.key),
                cost: cost(s.cost),
                denied: s.denied,
                missing_key: s.missing_key,
                unavailable: s.unavailable,
                headers: s.headers,
                degraded_headers: s.degraded_headers,
                check_timeout: s.check_timeout,
                outage: s.outage,
            },
        }
    }

    /// The answer to a denied request (its status is the caller's choice;
    /// `429` is the standard one). Rate-limit headers are added to it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use ratelimit_core::{Policy, ReferenceLimiter};
    /// # let limiter = Arc::new(ReferenceLimiter::new(Policy::fixed_window(5, Duration::from_secs(30)).unwrap()));
    /// use ratelimit_tower::PlainResponse;
    /// let layer = ratelimit_tower::RateLimitLayer::new(limiter)
    ///     .with_denied_response(PlainResponse::new(http::StatusCode::TOO_MANY_REQUESTS, "Too many requests"));
    /// assert_eq!(layer.denied_response().body(), "Too many requests");
    /// ```
    #[must_use]
    pub fn with_denied_response(mut self, response: PlainResponse) -> Self {
        self.settings.denied = response;
        self
    }

    /// The answer when the key extractor finds no key (for [`ClientIp`],
    /// when the server recorded no peer address). Default `400`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use ratelimit_core::{Policy, ReferenceLimiter};
    /// # let limiter = Arc::new(ReferenceLimiter::new(Policy::fixed_window(5, Duration::from_secs(30)).unwrap()));
    /// use ratelimit_tower::PlainResponse;
    /// let layer = ratelimit_tower::RateLimitLayer::new(limiter)
    ///     .with_missing_key_response(PlainResponse::new(http::StatusCode::FORBIDDEN, "Who are you?"));
    /// assert_eq!(layer.missing_key_response().status(), 403);
    /// ```
    #[must_use]
    pub fn with_missing_key_response(mut self, response: PlainResponse) -> Self {
        self.settings.missing_key = response;
        self
    }

    /// The answer when the limiter cannot decide (an error, or no answer
    /// within the check timeout) and to a decision a fail-closed policy
    /// made while the store was away. Default `503`; a `Retry-After` is
    /// added to it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use ratelimit_core::{Policy, ReferenceLimiter};
    /// # let limiter = Arc::new(ReferenceLimiter::new(Policy::fixed_window(5, Duration::from_secs(30)).unwrap()));
    /// use ratelimit_tower::PlainResponse;
    /// let layer = ratelimit_tower::RateLimitLayer::new(limiter)
    ///     .with_unavailable_response(PlainResponse::new(http::StatusCode::SERVICE_UNAVAILABLE, "Busy"));
    /// assert_eq!(layer.unavailable_response().body(), "Busy");
    /// ```
    #[must_use]
    pub fn with_unavailable_response(mut self, response: PlainResponse) -> Self {
        self.settings.unavailable = response;
        self
    }

    /// The rate-limit header writer (the policy's name).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use ratelimit_core::{Policy, ReferenceLimiter};
    /// # let limiter = Arc::new(ReferenceLimiter::new(Policy::fixed_window(5, Duration::from_secs(30)).unwrap()));
    /// use ratelimit_tower::RateLimitHeaders;
    /// let layer = ratelimit_tower::RateLimitLayer::new(limiter)
    ///     .with_headers(RateLimitHeaders::new("per-ip"));
    /// assert_eq!(layer.headers().quoted_name(), r#""per-ip""#);
    /// ```
    #[must_use]
    pub fn with_headers(mut self, headers: RateLimitHeaders) -> Self {
        self.settings.headers = headers;
        self
    }

    /// Whether degraded decisions (made by a failure policy while the store
    /// was away, [`Decision::degraded`](ratelimit_core::Decision::degraded))
    /// carry the quota headers. Off by default: their numbers describe no
    /// real quota (fail closed, fail open) or only this process's share of
    /// it (a fallback limiter), and a client would pace itself on them.
    /// `Retry-After` is written on a degraded denial either way.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use ratelimit_core::{Policy, ReferenceLimiter};
    /// # let limiter = Arc::new(ReferenceLimiter::new(Policy::fixed_window(5, Duration::from_secs(30)).unwrap()));
    /// let layer = ratelimit_tower::RateLimitLayer::new(limiter).with_degraded_headers(true);
    /// assert!(layer.degraded_headers());
    /// ```
    #[must_use]
    pub fn with_degraded_headers(mut self, enabled: bool) -> Self {
        self.settings.degraded_headers = enabled;
        self
    }

    /// The longest wait for the limiter; past it the check counts as an
    /// error (a `503`). `None` waits as long as the limiter does.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use ratelimit_core::{Policy, ReferenceLimiter};
    /// # let limiter = Arc::new(ReferenceLimiter::new(Policy::fixed_window(5, Duration::from_secs(30)).unwrap()));
    /// let layer = ratelimit_tower::RateLimitLayer::new(limiter)
    ///     .with_check_timeout(Some(Duration::from_millis(250)));
    /// assert_eq!(layer.check_timeout(), Some(Duration::from_millis(250)));
    /// ```
    #[must_use]
    pub fn with_check_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings.check_timeout = timeout;
        self
    }

    /// Whether degraded decisions carry quota headers.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use ratelimit_core::{Policy, ReferenceLimiter};
    /// # let limiter = Arc::new(ReferenceLimiter::new(Policy::fixed_window(5, Duration::from_secs(30)).unwrap()));
    /// let layer = ratelimit_tower::RateLimitLayer::new(limiter);
    /// assert!(!layer.degraded_headers());
    /// ```
    #[must_use]
    pub fn degraded_headers(&self) -> bool {
        self.settings.degraded_headers
    }

    /// The denial response.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use ratelimit_core::{Policy, ReferenceLimiter};
    /// # let limiter = Arc::new(ReferenceLimiter::new(Policy::fixed_window(5, Duration::from_secs(30)).unwrap()));
    /// let layer = ratelimit_tower::RateLimitLayer::new(limiter);
    /// assert_eq!(layer.denied_response().status(), 429);
    /// ```
    #[must_use]
    pub fn denied_response(&self) -> &PlainResponse {
        &self.settings.denied
    }

    /// The missing-key response.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use ratelimit_core::{Policy, ReferenceLimiter};
    /// # let limiter = Arc::new(ReferenceLimiter::new(Policy::fixed_window(5, Duration::from_secs(30)).unwrap()));
    /// let layer = ratelimit_tower::RateLimitLayer::new(limiter);
    /// assert_eq!(layer.missing_key_response().status(), 400);
    /// ```
    #[must_use]
    pub fn missing_key_response(&self) -> &PlainResponse {
        &self.settings.missing_key
    }

    /// The response when the limiter cannot decide.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use ratelimit_core::{Policy, ReferenceLimiter};
    /// # let limiter = Arc::new(ReferenceLimiter::new(Policy::fixed_window(5, Duration::from_secs(30)).unwrap()));
    /// let layer = ratelimit_tower::RateLimitLayer::new(limiter);
    /// assert_eq!(layer.unavailable_response().status(), 503);
    /// ```
    #[must_use]
    pub fn unavailable_response(&self) -> &PlainResponse {
        &self.settings.unavailable
    }

    /// The header writer.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use ratelimit_core::{Policy, ReferenceLimiter};
    /// # let limiter = Arc::new(ReferenceLimiter::new(Policy::fixed_window(5, Duration::from_secs(30)).unwrap()));
    /// let layer = ratelimit_tower::RateLimitLayer::new(limiter);
    /// assert_eq!(layer.headers().quoted_name(), r#""default""#);
    /// ```
    #[must_use]
    pub fn headers(&self) -> &RateLimitHeaders {
        &self.settings.headers
    }

    /// The check timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use ratelimit_core::{Policy, ReferenceLimiter};
    /// # let limiter = Arc::new(ReferenceLimiter::new(Policy::fixed_window(5, Duration::from_secs(30)).unwrap()));
    /// let layer = ratelimit_tower::RateLimitLayer::new(limiter).with_check_timeout(None);
    /// assert_eq!(layer.check_timeout(), None);
    /// ```
    #[must_use]
    pub fn check_timeout(&self) -> Option<Duration> {
        self.settings.check_timeout
    }
}

impl<S, K: Clone, C: Clone> Layer<S> for RateLimitLayer<K, C> {
    type Service = RateLimitService<S, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        let policy = self
            .settings
            .headers
            .policy_fields(self.settings.limiter.policies());
        RateLimitService::new(inner, self.settings.clone(), policy)
    }
}

impl<K, C> fmt::Debug for RateLimitLayer<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("policies", &self.settings.limiter.policies())
            .field("degraded_headers", &self.settings.degraded_headers)
            .field("check_timeout", &self.settings.check_timeout)
            .finish_non_exhaustive()
    }
}
