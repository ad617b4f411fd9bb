//! Helpers shared by the example's integration tests.
#![allow(dead_code)] // each test binary uses a different subset

pub mod process;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use ratelimit_axum_example::{app, AppOptions, Config, Model, OfflineModel};
use ratelimit_core::{Limiter, ManualClock};
use ratelimit_memory::MemoryLimiter;
use serde_json::Value;

/// The start of a 30-second window, so a fresh window has exactly 30 s.
pub const WINDOW_START_US: u64 = 1_800_000_000_000_000;

pub const PLAIN_BODY: &str = r#"{"messages":[{"role":"user","content":"Why is the sky blue?"}]}"#;

pub const SDK_BODY: &str = r#"{"id":"chat-1","trigger":"submit-message","messages":[
  {"id":"m1","role":"user","parts":[{"type":"step-start"},{"type":"text","text":"Why is the sky blue?"}]}]}"#;

/// The service on the default configuration (optionally adjusted), with
/// the memory backend on a manual clock, the offline model at zero delay.
pub struct TestApp {
    pub router: Router,
    pub clock: ManualClock,
    pub limiter: Arc<dyn Limiter>,
}

pub fn test_app(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::default();
    config.model.delta_delay = Duration::ZERO;
    adjust(&mut config);
    let clock = ManualClock::new(WINDOW_START_US);
    // The backend the service uses by default, on a clock the test moves.
    let limiter: Arc<dyn Limiter> =
        Arc::new(MemoryLimiter::with_clock(config.limit, clock.clone()));
    let model: Arc<dyn Model> = Arc::new(OfflineModel::new(Duration::ZERO));
    let options = AppOptions::from_config(&config).unwrap();
    TestApp {
        router: app(&options, Arc::clone(&limiter), model),
        clock,
        limiter,
    }
}

impl TestApp {
    /// Sends `request` through the service in process.
    pub async fn send(&self, request: Request<Body>) -> axum::response::Response {
        use tower::ServiceExt as _;
        // Router's error type is Infallible: oneshot cannot fail.
        self.router.clone().oneshot(request).await.unwrap()
    }

    /// The status of the plain chat request from `peer` with extra
    /// `headers`.
    pub async fn status_of(&self, peer: &str, headers: &[(&str, &str)]) -> StatusCode {
        self.send(generate_request(peer, PLAIN_BODY, headers))
            .await
            .status()
    }
}

/// A `POST /api/generate` from `peer` with `body` and extra headers.
pub fn generate_request(
    peer: &str,
    body: impl Into<Body>,
    headers: &[(&str, &str)],
) -> Request<Body> {
    let mut builder = Request::post("/api/generate").header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut req = builder.body(body.into()).unwrap();
    let peer: SocketAddr = peer.parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    req
}

/// The JSON chunks of a UI message stream body, checking the framing:
/// every event is `data: <json>\n\n` and the last is `data: [DONE]`.
pub fn chunks(body: &str) -> Vec<Value> {
    assert!(
        body.ends_with("data: [DONE]\n\n"),
        "no [DONE] at the end: {body:?}"
    );
    let events: Vec<&str> = body.split_terminator("\n\n").collect();
    let (last, rest) = events.split_last().unwrap();
    assert_eq!(*last, "data: [DONE]");
    rest.iter()
        .map(|event| {
            let json = event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"));
            assert!(!json.contains('\n'), "compact JSON on one line: {json:?}");
            serde_json::from_str(json).unwrap()
        })
        .collect()
}

/// The text of the `text-delta` chunks, in order.
pub fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter(|c| c["type"] == "text-delta")
        .map(|c| c["delta"].as_str().unwrap())
        .collect()
}

/// The chunk types, in order, with the run of deltas collapsed to one.
pub fn shape(chunks: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in chunks {
        let t = c["type"].as_str().unwrap().to_owned();
        if t == "text-delta" && out.last().is_some_and(|l| l == "text-delta") {
            continue;
        }
        out.push(t);
    }
    out
}

/// Serves `router` on a free loopback port with peer addresses recorded.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// Waits, when less than `need` is left of the current window of length
/// `window` on the system clock (windows are aligned to the Unix epoch, as
/// the limiters and Redis's `TIME` align them), until the next window
/// starts. A test of the real binary that counts requests in one fixed
/// window calls it first, so its window cannot turn under it.
pub async fn clear_of_window_edge(window: Duration, need: Duration) {
    assert!(need < window, "{need:?} never fits in a {window:?} window");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let into = Duration::from_nanos((now.as_nanos() % window.as_nanos()) as u64);
    let left = window - into;
    if left < need {
        // A little past the edge, so the clocks of Redis and of the
        // processes agree on the new window too.
        tokio::time::sleep(left + Duration::from_millis(200)).await;
    }
}
