//! The service: check, then call the inner service or answer for it.

use std::convert::Infallible;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{HeaderMap, Request, Response};
use pin_project_lite::pin_project;
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

/// A response the layer wrote itself: its body is never the inner
/// service's, so it is made once and given the inner body's type when the
/// future completes.
type Own = Response<RateLimitBody<Infallible>>;

/// Writes the quota fields of a decision on a response of the inner
/// service; the layer's settings behind it, whatever its key extractor
/// and cost function.
trait WriteQuota: Send + Sync {
    fn write_quota(&self, headers: &mut HeaderMap, decision: &Decision);
}

/// The fields to write on the inner service's response once it arrives.
struct Quota {
    writer: Arc<dyn WriteQuota>,
    decision: Decision,
}

/// What the limiter's answer makes of a request.
enum Verdict {
    /// Call the inner service; write the decision's fields when given.
    Call(Option<Decision>),
    /// Answer for the service.
    Answer(Own),
}

/// The next step of a check that had to be awaited.
enum Next<F> {
    Call(F, Option<Quota>),
    Answer(Own),
}

pin_project! {
    /// The future of a [`RateLimitService`] response. `F` is the inner
    /// service's future.
    ///
    /// A limiter that answers at once ([`Limiter::check_now`]) leaves
    /// nothing to await but the inner service: the future then holds the
    /// inner service's future and no box. Only a check that must be
    /// awaited (a remote store) is boxed.
    ///
    /// [`Limiter::check_now`]: ratelimit_core::Limiter::check_now
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        /// The inner service was called.
        Called {
            #[pin]
            call: F,
            quota: Option<Quota>,
        },
        /// The layer answered; `None` once taken.
        Answered { res: Option<Own> },
        /// The check is awaited.
        Waiting { next: Pin<Box<dyn Future<Output = Next<F>> + Send>> },
    }
}

impl<F> ResponseFuture<F> {
    fn called(call: F, quota: Option<Quota>) -> Self {
        Self {
            state: State::Called { call, quota },
        }
    }

    fn answered(res: Own) -> Self {
        Self {
            state: State::Answered { res: Some(res) },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<RateLimitBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut state = self.as_mut().project().state;
            let next = match state.as_mut().project() {
                StateProj::Called { call, quota } => {
                    let mut res = ready!(call.poll(cx))?;
                    if let Some(quota) = quota.take() {
                        quota.writer.write_quota(res.headers_mut(), &quota.decision);
                    }
                    return Poll::Ready(Ok(res.map(RateLimitBody::inner)));
                }
                StateProj::Answered { res } => {
                    let res = res.take().expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(res.map(RateLimitBody::cast)));
                }
                StateProj::Waiting { next } => ready!(next.as_mut().poll(cx)),
            };
            state.set(match next {
                Next::Call(call, quota) => State::Called { call, quota },
                Next::Answer(res) => State::Answered { res: Some(res) },
            });
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, K, C, ReqB, ResB> Service<Request<ReqB>> for RateLimitService<S, K, C>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    K: KeyExtractor,
    C: CostFunction,
    ReqB: Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<RateLimitBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let settings = &self.shared.settings;
        let (parts, body) = req.into_parts();
        let Some(key) = settings.key.extract_key(&parts) else {
            // The path only: a query string may carry credentials.
            tracing::warn!(
                path = parts.uri.path(),
                "no rate-limit key for the request; answering without calling the service"
            );
            return ResponseFuture::answered(settings.missing_key.to_response());
        };
        let cost = settings.cost.cost(&parts);
        let req = Request::from_parts(parts, body);
        if cost == 0 {
            return ResponseFuture::called(self.inner.call(req), None);
        }
        // A limiter that answers at once: the instance polled ready is
        // called here, and nothing but its future is left to await.
        if let Some(result) = settings.limiter.check_now(&key, cost) {
            return match self.shared.verdict(result) {
                Verdict::Call(decision) => {
                    let quota = decision.map(|decision| self.quota(decision));
                    ResponseFuture::called(self.inner.call(req), quota)
                }
                Verdict::Answer(res) => ResponseFuture::answered(res),
            };
        }
        // The instance that was polled ready goes into the future, to be
        // called once the limiter allows; this service keeps a fresh clone
        // (tower's usual swap).
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let shared = Arc::clone(&self.shared);
        ResponseFuture {
            state: State::Waiting {
                next: Box::pin(async move {
                    let result = shared.check(&key, cost).await;
                    match shared.verdict(result) {
                        Verdict::Call(decision) => {
                            let quota = decision.map(|decision| Quota {
                                writer: shared,
                                decision,
                            });
                            Next::Call(inner.call(req), quota)
                        }
                        Verdict::Answer(res) => Next::Answer(res),
                    }
                }),
            },
        }
    }
}

impl<S, K: KeyExtractor, C: CostFunction> RateLimitService<S, K, C> {
    fn quota(&self, decision: Decision) -> Quota {
        Quota {
            writer: Arc::clone(&self.shared) as Arc<dyn WriteQuota>,
            decision,
        }
    }
}

impl<K: KeyExtractor, C: CostFunction> WriteQuota for Shared<K, C> {
    fn write_quota(&self, headers: &mut HeaderMap, decision: &Decision) {
        self.settings
            .headers
            .write_decision(headers, decision, &self.policy);
    }
}

impl<K: KeyExtractor, C: CostFunction> Shared<K, C> {
    /// What the limiter's answer makes of the request: call the inner
    /// service (with the quota fields to write, if any), or answer for it.
    fn verdict(&self, result: Result<Decision, Error>) -> Verdict {
        let decision = match result {
            Ok(decision) => {
                self.settings.outage.answered();
                decision
            }
            Err(err) if err.is_cost_rejected() => {
                tracing::debug!(error = %err.chain(), "request cost can never fit the limit");
                return Verdict::Answer(self.cost_rejected());
            }
            Err(err) => {
                self.settings.outage.failed(&err.chain());
                return Verdict::Answer(self.refuse(
                    &self.settings.unavailable,
                    None,
                    ERROR_RETRY_AFTER,
                ));
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
            return Verdict::Call(quota.copied());
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
        Verdict::Answer(self.refuse(answer, quota, wait))
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
