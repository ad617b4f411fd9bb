//! The service: check, then call the inner service or answer for it.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use ratelimit_core::{Decision, Error, FailurePolicy};
use tower_service::Service;

use crate::headers::{write_retry_after, PolicyFields};
use crate::layer::Settings;
use crate::{CostFunction, KeyExtractor, PlainResponse, RateLimitBody};

/// The `Retry-After` of a `503` for a limiter error. The layer cannot know
/// when the store comes back; one second is the shortest wait the field
/// can say, so clients back off a little without being told of an outage
/// length nobody knows.
const ERROR_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

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
    /// The header fields the limiter's policies give, the same on every
    /// response.
    policy: PolicyFields,
}

impl<S, K, C> RateLimitService<S, K, C> {
    pub(crate) fn new(inner: S, settings: Settings<K, C>, policy: PolicyFields) -> Self {
        Self {
            inner,
            shared: Arc::new(Shared { settings, policy }),
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
        // The key and the cost are read here rather than in the future, so
        // the request's parts never live in the boxed future (it is moved
        // into its box, and each field it holds across an `await` makes
        // it larger).
        let settings = &self.shared.settings;
        let (parts, body) = req.into_parts();
        let Some(key) = settings.key.extract(&parts) else {
            // The path only: a query string may carry credentials.
            tracing::warn!(
                path = parts.uri.path(),
                "no rate-limit key for the request; answering without calling the service"
            );
            let res = settings.missing_key.to_response();
            return ResponseFuture {
                inner: Box::pin(std::future::ready(Ok(res))),
            };
        };
        let cost = settings.cost.cost(&parts);
        let req = Request::from_parts(parts, body);
        if cost == 0 {
            let call = self.inner.call(req);
            return ResponseFuture {
                inner: Box::pin(async move { Ok(call.await?.map(RateLimitBody::inner)) }),
            };
        }
        // The instance that was polled ready goes into the future, to be
        // called once the limiter allows; this service keeps a fresh clone
        // (tower's usual swap).
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        let shared = Arc::clone(&self.shared);
        ResponseFuture {
            inner: Box::pin(shared.handle(inner, req, key, cost)),
        }
    }
}

impl<K: KeyExtractor, C: CostFunction> Shared<K, C> {
    /// Checks `key` at `cost`, then calls `inner` with `req` or answers
    /// for it.
    async fn handle<S, ReqB, ResB>(
        self: Arc<Self>,
        mut inner: S,
        req: Request<ReqB>,
        key: Vec<u8>,
        cost: u64,
    ) -> Result<Response<RateLimitBody<ResB>>, S::Error>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
    {
        let decision = match self.check(&key, cost).await {
            Ok(decision) => {
                self.settings.outage.answered();
                decision
            }
            Err(err) if err.is_cost_rejected() => {
                tracing::debug!(error = %err.chain(), "request cost can never fit the limit");
                return Ok(self.cost_rejected());
            }
            Err(err) => {
                self.settings.outage.failed(&err);
                return Ok(self.refuse(&self.settings.unavailable, None, ERROR_RETRY_AFTER));
            }
        };

        // The quota headers come from the store's decisions; a degraded
        // one's numbers describe no real quota (or only this process's),
        // so they are written only when the layer is told to.
        let quota = match decision.degraded {
            None => Some(&decision),
            Some(policy) => {
                // The failure policy that made the decision (`Failover`)
                // logs the outage; a second WARN here would double every
                // transition.
                tracing::debug!(%policy, allowed = decision.allowed, "degraded rate-limit decision");
                self.settings.degraded_headers.then_some(&decision)
            }
        };
        if decision.allowed {
            let mut res = inner.call(req).await?;
            if let Some(decision) = quota {
                self.write_headers(&mut res, decision);
            }
            return Ok(res.map(RateLimitBody::inner));
        }
        let answer = match decision.degraded {
            // Nothing was counted: the service is unavailable, not the
            // client over its quota.
            Some(FailurePolicy::Closed) => &self.settings.unavailable,
            // The store's denial; a fallback limiter's count is real, if
            // only this process's. Open never denies; should it, it is a
            // denial all the same.
            None | Some(FailurePolicy::Fallback | FailurePolicy::Open) => &self.settings.denied,
        };
        let wait = decision.retry_after.unwrap_or(ERROR_RETRY_AFTER);
        Ok(self.refuse(answer, quota, wait))
    }

    async fn check(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
        let mut check = self.settings.limiter.check(key, cost);
        let Some(limit) = self.settings.check_timeout else {
            return check.await;
        };
        // A limiter that answers at its first poll (an in-memory one) needs
        // no timer: no clock read, no runtime handle, no timer entry in the
        // future. Only a check that waits is timed, from then on.
        if let Poll::Ready(decided) = poll_fn(|cx| Poll::Ready(check.as_mut().poll(cx))).await {
            return decided;
        }
        // Boxed: a timer entry is large, and only a waiting check has one.
        Box::pin(tokio::time::timeout(limit, check))
            .await
            .unwrap_or_else(|elapsed| Err(Error::timeout(Some(Box::new(elapsed)))))
    }

    /// `answer` with `Retry-After: wait`, and the quota headers of
    /// `quota` when given (`wait` is then its `retry_after`, if it has one).
    fn refuse<B>(
        &self,
        answer: &PlainResponse,
        quota: Option<&Decision>,
        wait: std::time::Duration,
    ) -> Response<RateLimitBody<B>> {
        let mut res = answer.to_response();
        if let Some(decision) = quota {
            self.write_headers(&mut res, decision);
        }
        // A refusal always says when to come back: the quota headers wrote
        // the decision's `retry_after` if it has one (and removed the field
        // if not), so only then is `wait` written.
        if quota.is_none_or(|decision| decision.retry_after.is_none()) {
            write_retry_after(res.headers_mut(), wait);
        }
        res
    }

    /// A cost above the limit: never allowed, so no `Retry-After` would
    /// help and none is sent. The limiter read no state, so only the
    /// policy's fields are written: `r` and `t` would be made up.
    fn cost_rejected<B>(&self) -> Response<RateLimitBody<B>> {
        let mut res = self.settings.denied.to_response();
        self.settings
            .headers
            .write_policy(res.headers_mut(), &self.policy);
        res
    }

    fn write_headers<B>(&self, res: &mut Response<B>, decision: &Decision) {
        self.settings
            .headers
            .write_decision(res.headers_mut(), decision, &self.policy);
    }
}
