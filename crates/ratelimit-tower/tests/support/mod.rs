//! What the integration tests share: a trivial service, requests, and a
//! limiter that answers what the test says. The log capture is
//! `ratelimit-testkit`'s.

#![allow(dead_code)] // each test file uses its own part

use std::convert::Infallible;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use ratelimit_core::{Decision, Error, Limiter, Policy};
use ratelimit_tower::{PeerAddr, RateLimitBody};
use tower::{service_fn, Service, ServiceExt as _};

pub type Body = http_body_util::Full<bytes::Bytes>;

/// A service answering `hello`, counting its calls.
pub fn counting_service(
    calls: Arc<AtomicUsize>,
) -> impl Service<Request<()>, Response = Response<Body>, Error = Infallible, Future: Send>
       + Clone
       + Send
       + 'static {
    service_fn(move |_req: Request<()>| {
        calls.fetch_add(1, Ordering::Relaxed);
        async { Ok(Response::new(Body::from("hello"))) }
    })
}

/// A service answering `hello`.
pub fn ok_service(
) -> impl Service<Request<()>, Response = Response<Body>, Error = Infallible, Future: Send>
       + Clone
       + Send
       + 'static {
    counting_service(Arc::default())
}

/// Sends `req` through a clone of `svc` (which stays usable) and returns
/// the response.
pub async fn send<S>(svc: &S, req: Request<()>) -> Response<RateLimitBody<Body>>
where
    S: Service<Request<()>, Response = Response<RateLimitBody<Body>>> + Clone,
    S::Error: Debug,
{
    svc.clone().oneshot(req).await.unwrap()
}

/// A request from `peer` with `headers`.
pub fn request(peer: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut req = Request::new(());
    let peer: SocketAddr = peer.parse().unwrap();
    req.extensions_mut().insert(PeerAddr::new(peer));
    for (name, value) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    req
}

pub async fn body_text(res: Response<RateLimitBody<Body>>) -> String {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
}

/// The quota fields, which a degraded answer must not carry by default.
pub const QUOTA_HEADERS: [&str; 5] = [
    "ratelimit",
    "ratelimit-policy",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
];

pub fn assert_no_quota_headers(headers: &HeaderMap) {
    for name in QUOTA_HEADERS {
        assert!(headers.get(name).is_none(), "{name} present: {headers:?}");
    }
}

pub fn assert_quota_headers(headers: &HeaderMap) {
    for name in QUOTA_HEADERS {
        assert!(headers.get(name).is_some(), "{name} missing: {headers:?}");
    }
}

/// What a [`Scripted`] limiter answers.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    Decide(Decision),
    /// A backend error whose cause names a host, as a real one would.
    Fail,
}

/// A limiter that answers whatever the test set last.
#[derive(Debug)]
pub struct Scripted {
    policies: Vec<Policy>,
    answer: Mutex<Answer>,
}

impl Scripted {
    pub fn new(policy: Policy, answer: Answer) -> Arc<Self> {
        Arc::new(Self {
            policies: vec![policy],
            answer: Mutex::new(answer),
        })
    }

    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn answer(&self) -> Result<Decision, Error> {
        match *self.answer.lock().unwrap() {
            Answer::Decide(decision) => Ok(decision),
            Answer::Fail => Err(Error::backend(std::io::Error::other(
                "connection refused: cache-7.internal:6379",
            ))),
        }
    }
}

#[async_trait]
impl Limiter for Scripted {
    async fn check(&self, _key: &[u8], _cost: u64) -> Result<Decision, Error> {
        self.answer()
    }
    async fn peek(&self, _key: &[u8]) -> Result<Decision, Error> {
        self.answer()
    }
    async fn reset(&self, _key: &[u8]) -> Result<(), Error> {
        Ok(())
    }
    fn policies(&self) -> &[Policy] {
        &self.policies
    }
}
