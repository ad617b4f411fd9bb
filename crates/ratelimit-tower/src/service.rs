//! The service: check, then call the inner service or answer for it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use ratelimit_core::{Decision, Error};
use tower_service::Service;

use crate::layer::Settings;
use crate::{CostFunction, FailureMode, KeyExtractor, RateLimitBody};

/// A service that checks each request against a limiter before its inner
/// service sees it; built by [`RateLimitLayer`](crate::RateLimitLayer).
///
/// The request body is not touched before the check, so a denied request
/// costs no body read. See the crate documentation for an example.
pub struct RateLimitService<S, K, C> {
    inner: S,
    shared: Arc<Shared<K, C>>,
}

/// The layer's settings plus what is derived from them once per service.
struct Shared<K, C> {
    settings: Settings<K, C>,
    /// `RateLimit-Policy`, the same on every response.
    policy_header: Option<HeaderValue>,
}

impl<S, K, C> RateLimitService<S, K, C> {
    pub(crate) fn new(
        inner: S,
        settings: Settings<K, C>,
        policy_header: Option<HeaderValue>,
    ) -> Self {
        Self {
            inner,
            shared: Arc::new(Shared {
                settings,
                policy_header,
            }),
        }
    }
}

impl<S: Clone, K, C> Clone for RateLimitService<S, K, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, K, C> fmt::Debug for RateLimitService<S, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

type Limited<B, E> = Result<Response<RateLimitBody<B>>, E>;

/// The future of a [`RateLimitService`] response.
pub struct ResponseFuture<B, E> {
    // Boxed: the limiter's own future is already boxed (an object-safe
    // async trait), so naming the state machine would save nothing.
    inner: Pin<Box<dyn Future<Output = Limited<B, E>> + Send>>,
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Limited<B, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B, E> fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, K, C, ReqB, ResB> Service<Request<ReqB>> for RateLimitService<S, K, C>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    K: KeyExtractor,
    C: CostFunction,
    ReqB: Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<RateLimitBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // The instance that was polled ready goes into the future; this
        // service keeps a fresh clone (tower's usual swap).
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        let shared = Arc::clone(&self.shared);
        ResponseFuture {
            inner: Box::pin(shared.handle(inner, req)),
        }
    }
}

impl<K: KeyExtractor, C: CostFunction> Shared<K, C> {
    async fn handle<S, ReqB, ResB>(
        self: Arc<Self>,
        mut inner: S,
        req: Request<ReqB>,
    ) -> Result<Response<RateLimitBody<ResB>>, S::Error>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
    {
        let (parts, body) = req.into_parts();
        let Some(key) = self.settings.key.extract(&parts) else {
            tracing::warn!(uri = %parts.uri, "no rate-limit key for the request; answering without calling the service");
            return Ok(self.settings.missing_key.to_response());
        };
        let cost = self.settings.cost.cost(&parts);
        let req = Request::from_parts(parts, body);
        if cost == 0 {
            return Ok(inner.call(req).await?.map(RateLimitBody::inner));
        }

        match self.check(&key, cost).await {
            Ok(decision) if decision.allowed => {
                let mut res = inner.call(req).await?;
                self.write_headers(&mut res, &decision);
                Ok(res.map(RateLimitBody::inner))
            }
            Ok(decision) => Ok(self.denial(&decision)),
            Err(err) if err.is_cost_rejected() => {
                tracing::debug!(%err, "request cost can never fit the limit");
                // Never allowed: no Retry-After would help, so none is sent.
                let limit = self
                    .settings
                    .limiter
                    .policies()
                    .first()
                    .map_or(0, |p| p.limit());
                // A denial without `retry_after`, which no constructor
                // builds: no wait makes this cost fit. `remaining` is 0 for
                // this cost whatever the key's state.
                let mut decision = Decision::allowed(limit, 0, std::time::Duration::ZERO);
                decision.allowed = false;
                Ok(self.denial(&decision))
            }
            Err(err) => match self.settings.failure {
                FailureMode::Open => {
                    tracing::warn!(error = %err, "rate limiter failed; letting the request through (fail open)");
                    Ok(inner.call(req).await?.map(RateLimitBody::inner))
                }
                _ => {
                    tracing::error!(error = %err, "rate limiter failed; refusing the request (fail closed)");
                    Ok(self.settings.unavailable.to_response())
                }
            },
        }
    }

    async fn check(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
        let check = self.settings.limiter.check(key, cost);
        match self.settings.check_timeout {
            Some(limit) => tokio::time::timeout(limit, check)
                .await
                .unwrap_or_else(|elapsed| Err(Error::timeout(Some(Box::new(elapsed))))),
            None => check.await,
        }
    }

    fn denial<B>(&self, decision: &Decision) -> Response<RateLimitBody<B>> {
        let mut res = self.settings.denied.to_response();
        self.write_headers(&mut res, decision);
        res
    }

    fn write_headers<B>(&self, res: &mut Response<B>, decision: &Decision) {
        self.settings.headers.write_decision(
            res.headers_mut(),
            decision,
            self.policy_header.as_ref(),
        );
    }
}
