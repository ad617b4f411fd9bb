//! What the integration tests share: a trivial service, requests, a
//! limiter that answers what the test says, and a log capture.

#![allow(dead_code)] // each test file uses its own part

use std::cell::RefCell;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};

use async_trait::async_trait;
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use ratelimit_core::{Decision, Error, Limiter, Policy};
use ratelimit_tower::{PeerAddr, RateLimitBody};
use tower::{service_fn, Service};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::Layer;

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

/// One captured log event: its level and its fields as `name=value`.
#[derive(Debug, Clone)]
pub struct Line {
    pub level: Level,
    pub text: String,
}

thread_local! {
    /// The events of this thread while a [`Capture`] is installed on it.
    static LINES: RefCell<Option<Vec<Line>>> = const { RefCell::new(None) };
}

/// Captures the events of the current thread (the tests run on a
/// current-thread runtime) until dropped.
///
/// The subscriber is global and installed once, and it files each event
/// under the thread that emitted it. A scoped subscriber per test
/// (`set_default`) loses events when tests run in parallel: tracing caches
/// each call site's interest (and the maximum level) across threads, and
/// a call site first reached by a test without a subscriber is cached as
/// disabled.
#[derive(Debug)]
pub struct Capture(());

impl Capture {
    pub fn install() -> Self {
        static GLOBAL: Once = Once::new();
        GLOBAL.call_once(|| {
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(ThreadLines),
            )
            .expect("no other global subscriber in the tests");
        });
        LINES.with(|lines| *lines.borrow_mut() = Some(Vec::new()));
        Self(())
    }

    pub fn lines(&self) -> Vec<Line> {
        LINES.with(|lines| lines.borrow().clone().unwrap_or_default())
    }

    pub fn at(&self, level: Level) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.level == level)
            .map(|l| l.text)
            .collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        LINES.with(|lines| *lines.borrow_mut() = None);
    }
}

struct ThreadLines;

impl<S: Subscriber> Layer<S> for ThreadLines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        struct Fields(String);
        impl Visit for Fields {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                let _ = write!(self.0, "{}={:?} ", field.name(), value);
            }
        }
        LINES.with(|lines| {
            if let Some(lines) = lines.borrow_mut().as_mut() {
                let mut fields = Fields(String::new());
                event.record(&mut fields);
                lines.push(Line {
                    level: *event.metadata().level(),
                    text: fields.0,
                });
            }
        });
    }
}
