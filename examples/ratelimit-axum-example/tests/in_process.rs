//! The service driven in process with `oneshot`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use http_body_util::BodyExt;
use ratelimit_axum_example::{parse_chat_request, OfflineModel};
use tower::ServiceExt;

async fn text(res: axum::response::Response) -> String {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn h<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn sixth_request_inside_30s_is_429_with_headers() {
    let t = test_app(|_| {});
    for i in 1..=5u32 {
        let res = t
            .send(generate_request("203.0.113.7:5000", PLAIN_BODY, &[]))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            h(res.headers(), "ratelimit-policy"),
            r#""default";q=5;w=30"#
        );
        assert_eq!(
            h(res.headers(), "ratelimit"),
            format!(r#""default";r={};t={}"#, 5 - i, 31 - i)
        );
        assert_eq!(h(res.headers(), "x-ratelimit-limit"), "5");
        assert_eq!(
            h(res.headers(), "x-ratelimit-remaining"),
            (5 - i).to_string()
        );
        assert_eq!(h(res.headers(), "x-ratelimit-reset"), (31 - i).to_string());
        assert!(res.headers().get("retry-after").is_none());
        text(res).await;
        t.clock.advance(Duration::from_secs(1));
    }
    let res = t
        .send(generate_request("203.0.113.7:5001", PLAIN_BODY, &[]))
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        h(res.headers(), "content-type"),
        "text/plain; charset=utf-8"
    );
    assert_eq!(h(res.headers(), "retry-after"), "25");
    assert_eq!(h(res.headers(), "ratelimit"), r#""default";r=0;t=25"#);
    assert_eq!(
        h(res.headers(), "ratelimit-policy"),
        r#""default";q=5;w=30"#
    );
    assert_eq!(h(res.headers(), "x-ratelimit-remaining"), "0");
    assert_eq!(h(res.headers(), "x-ratelimit-reset"), "25");
    assert_eq!(text(res).await, "Ratelimited!");
}

#[tokio::test]
async fn allowed_response_is_a_ui_message_stream() {
    let t = test_app(|_| {});
    for body in [PLAIN_BODY, SDK_BODY] {
        let res = t.send(generate_request("192.0.2.10:1", body, &[])).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(h(res.headers(), "content-type"), "text/event-stream");
        assert_eq!(h(res.headers(), "cache-control"), "no-cache");
        assert_eq!(h(res.headers(), "x-vercel-ai-ui-message-stream"), "v1");
        assert_eq!(h(res.headers(), "x-accel-buffering"), "no");
        let chunks = chunks(&text(res).await);
        assert_eq!(
            shape(&chunks),
            [
                "start",
                "start-step",
                "text-start",
                "text-delta",
                "text-end",
                "finish-step",
                "finish"
            ]
        );
        assert!(
            chunks.iter().filter(|c| c["type"] == "text-delta").count() > 5,
            "several deltas"
        );
        assert_eq!(chunks.last().unwrap()["finishReason"], "stop");
        let expected = OfflineModel::answer(&parse_chat_request(body.as_bytes()).unwrap());
        assert_eq!(streamed_text(&chunks), expected);
        assert!(expected.contains("Why is the sky blue?"));
    }
}

#[tokio::test]
async fn retry_after_rounds_up_to_whole_seconds() {
    let t = test_app(|_| {});
    for _ in 0..5 {
        t.send(generate_request("192.0.2.1:1", PLAIN_BODY, &[]))
            .await;
    }
    t.clock.advance(Duration::from_millis(29_700));
    let res = t
        .send(generate_request("192.0.2.1:1", PLAIN_BODY, &[]))
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        h(res.headers(), "retry-after"),
        "1",
        "300 ms rounds up to 1"
    );

    t.clock.advance(Duration::from_millis(299));
    let res = t
        .send(generate_request("192.0.2.1:1", PLAIN_BODY, &[]))
        .await;
    assert_eq!(h(res.headers(), "retry-after"), "1", "1 ms rounds up to 1");

    t.clock.advance(Duration::from_millis(1));
    assert_eq!(t.status_of("192.0.2.1:1", &[]).await, StatusCode::OK);
}

#[tokio::test]
async fn forged_x_forwarded_for_from_untrusted_peer_is_ignored() {
    let t = test_app(|c| c.client_ip.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()]);
    for i in 0..5 {
        let xff = format!("198.51.100.{i}");
        assert_eq!(
            t.status_of("203.0.113.7:1", &[("x-forwarded-for", &xff)])
                .await,
            StatusCode::OK
        );
    }
    assert_eq!(
        t.status_of("203.0.113.7:1", &[("x-forwarded-for", "198.51.100.200")])
            .await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn trusted_proxy_chain_read_right_to_left() {
    let t = test_app(|c| {
        c.client_ip.trusted_proxies = vec![
            "10.0.0.0/8".parse().unwrap(),
            "172.16.0.0/12".parse().unwrap(),
        ]
    });
    // Five requests of one client through two proxies, each with a fresh
    // forged leftmost hop: all count against 203.0.113.50.
    for i in 0..5 {
        let xff = format!("6.6.6.{i}, 203.0.113.50, 172.16.0.9");
        assert_eq!(
            t.status_of("10.0.0.1:1", &[("x-forwarded-for", &xff)])
                .await,
            StatusCode::OK
        );
    }
    assert_eq!(
        t.status_of("10.0.0.2:1", &[("x-forwarded-for", "203.0.113.50")])
            .await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The proxy itself, or another client behind it, is someone else.
    assert_eq!(
        t.status_of("10.0.0.2:1", &[("x-forwarded-for", "203.0.113.51")])
            .await,
        StatusCode::OK
    );
    assert_eq!(
        t.limiter.peek(b"203.0.113.50/32").await.unwrap().remaining,
        0
    );
    assert_eq!(t.limiter.peek(b"6.6.6.0/32").await.unwrap().remaining, 5);
}

#[tokio::test]
async fn ipv6_clients_grouped_by_64() {
    let t = test_app(|_| {});
    for i in 1..=5 {
        let peer = format!("[2001:db8:aa:bb:{i:x}:{i:x}::1]:443");
        assert_eq!(t.status_of(&peer, &[]).await, StatusCode::OK);
    }
    assert_eq!(
        t.status_of("[2001:db8:aa:bb::99]:443", &[]).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        t.status_of("[2001:db8:aa:bc::1]:443", &[]).await,
        StatusCode::OK
    );

    let t = test_app(|c| c.client_ip.ipv6_prefix = 128);
    for i in 1..=6 {
        let peer = format!("[2001:db8::{i:x}]:443");
        let res = t.send(generate_request(&peer, PLAIN_BODY, &[])).await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "a /128 prefix tells addresses apart"
        );
    }
}

#[tokio::test]
async fn malformed_bodies_are_400_with_a_reason() {
    let t = test_app(|c| {
        c.limit = ratelimit_core::Policy::fixed_window(100, Duration::from_secs(30)).unwrap()
    });
    let cases = [
        ("{not json", "Malformed JSON body"),
        (r#"{"prompt":"hi"}"#, "no `messages`"),
        (r#"{"messages":[]}"#, "`messages` is empty"),
        (
            r#"{"messages":[{"role":"wizard","content":"hi"}]}"#,
            "unknown role",
        ),
        (r#"{"messages":[{"role":"user"}]}"#, "neither `content`"),
        (r#"{"messages":"hi"}"#, "Malformed JSON body"),
    ];
    for (body, reason) in cases {
        let res = t.send(generate_request("192.0.2.5:1", body, &[])).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        assert!(h(res.headers(), "content-type").starts_with("text/plain"));
        let text = text(res).await;
        assert!(text.contains(reason), "{body}: {text}");
    }
}

#[tokio::test]
async fn oversized_body_is_413() {
    let t = test_app(|c| c.http.max_body_bytes = 1024);
    let big = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(2000)
    );
    let res = t
        .send(generate_request("192.0.2.6:1", big.clone(), &[]))
        .await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(text(res).await, "The request body is too large.");

    // Without a Content-Length (a streamed body) the limit still holds.
    let stream = futures_util::stream::iter(
        big.into_bytes()
            .chunks(100)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let res = t
        .send(generate_request(
            "192.0.2.6:1",
            Body::from_stream(stream),
            &[],
        ))
        .await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn limit_is_checked_before_the_body_is_read() {
    let t = test_app(|_| {});
    for _ in 0..5 {
        t.send(generate_request("192.0.2.7:1", PLAIN_BODY, &[]))
            .await;
    }
    let polled = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&polled);
    let body = futures_util::stream::once(async move {
        flag.store(true, Ordering::SeqCst);
        Ok::<_, std::io::Error>(PLAIN_BODY.as_bytes().to_vec())
    });
    let res = t
        .send(generate_request(
            "192.0.2.7:1",
            Body::from_stream(body),
            &[],
        ))
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        !polled.load(Ordering::SeqCst),
        "a denied request's body is never read"
    );
}

#[tokio::test]
async fn missing_peer_address_is_400_not_500() {
    let t = test_app(|_| {});
    let req = axum::http::Request::post("/api/generate")
        .body(Body::from(PLAIN_BODY))
        .unwrap();
    let res = t.router.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(text(res).await, "Could not identify the client.");
}

#[tokio::test]
async fn custom_denied_body_and_health_is_unlimited() {
    let t = test_app(|c| {
        c.http.denied_body = "Slow down".into();
        c.limit = ratelimit_core::Policy::fixed_window(1, Duration::from_secs(30)).unwrap();
    });
    t.send(generate_request("192.0.2.8:1", PLAIN_BODY, &[]))
        .await;
    let res = t
        .send(generate_request("192.0.2.8:1", PLAIN_BODY, &[]))
        .await;
    assert_eq!(text(res).await, "Slow down");
    for _ in 0..3 {
        let req = axum::http::Request::get("/healthz")
            .body(Body::empty())
            .unwrap();
        assert_eq!(t.send(req).await.status(), StatusCode::OK);
    }
}

/// A model that panics, and a limiter that panics.
#[derive(Debug)]
struct Panics;

#[async_trait::async_trait]
impl ratelimit_axum_example::Model for Panics {
    async fn stream(
        &self,
        _messages: Vec<ratelimit_axum_example::ChatMessage>,
    ) -> Result<ratelimit_axum_example::model::Deltas, ratelimit_axum_example::ModelError> {
        panic!("model bug with secret detail")
    }
}

#[async_trait::async_trait]
impl ratelimit_core::Limiter for Panics {
    async fn check(
        &self,
        _key: &[u8],
        _cost: u64,
    ) -> Result<ratelimit_core::Decision, ratelimit_core::Error> {
        panic!("limiter bug with secret detail")
    }
    async fn peek(&self, _key: &[u8]) -> Result<ratelimit_core::Decision, ratelimit_core::Error> {
        panic!("limiter bug")
    }
    async fn reset(&self, _key: &[u8]) -> Result<(), ratelimit_core::Error> {
        Ok(())
    }
    fn policies(&self) -> &[ratelimit_core::Policy] {
        &[]
    }
}

#[tokio::test]
async fn a_panicking_model_ends_the_stream_with_an_error_chunk() {
    let config = ratelimit_axum_example::Config::default();
    let options = ratelimit_axum_example::AppOptions::from_config(&config).unwrap();
    let limiter = Arc::new(ratelimit_core::ReferenceLimiter::new(config.limit));
    let router = ratelimit_axum_example::app(&options, limiter, Arc::new(Panics));
    let res = router
        .oneshot(generate_request("192.0.2.9:1", PLAIN_BODY, &[]))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = text(res).await;
    assert!(!body.contains("secret"), "{body}");
    let chunks = chunks(&body);
    assert_eq!(shape(&chunks), ["start", "start-step", "error"]);
}

#[tokio::test]
async fn a_panicking_limiter_is_a_500_not_a_dropped_connection() {
    let options =
        ratelimit_axum_example::AppOptions::from_config(&ratelimit_axum_example::Config::default())
            .unwrap();
    let router = ratelimit_axum_example::app(
        &options,
        Arc::new(Panics),
        Arc::new(OfflineModel::new(Duration::ZERO)),
    );
    let res = router
        .oneshot(generate_request("192.0.2.9:1", PLAIN_BODY, &[]))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(text(res).await, "Internal error.");
}

/// A `POST /api/generate` from `peer` with exactly `headers` (no implied
/// content type) and a body that records whether it was ever read.
fn raw_request(
    peer: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> (axum::http::Request<Body>, Arc<AtomicBool>) {
    let polled = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&polled);
    let stream = futures_util::stream::once(async move {
        flag.store(true, Ordering::SeqCst);
        Ok::<_, std::io::Error>(body.as_bytes().to_vec())
    });
    let mut builder = axum::http::Request::post("/api/generate");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut req = builder.body(Body::from_stream(stream)).unwrap();
    let peer: std::net::SocketAddr = peer.parse().unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    (req, polled)
}

#[tokio::test]
async fn a_body_not_declared_as_json_is_415_and_never_read() {
    let t = test_app(|c| {
        c.limit = ratelimit_core::Policy::fixed_window(100, Duration::from_secs(30)).unwrap()
    });
    let refused: [&[(&str, &str)]; 5] = [
        &[],
        &[("content-type", "text/plain")],
        &[("content-type", "text/plain;charset=UTF-8")],
        &[("content-type", "application/x-www-form-urlencoded")],
        &[("content-type", "multipart/form-data; boundary=x")],
    ];
    for headers in refused {
        let (req, polled) = raw_request("192.0.2.20:1", headers, PLAIN_BODY);
        let res = t.send(req).await;
        assert_eq!(
            res.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{headers:?}"
        );
        assert!(!polled.load(Ordering::SeqCst), "{headers:?}: body read");
        assert_eq!(
            text(res).await,
            "The request body must be JSON, sent with Content-Type: application/json."
        );
    }
    for ct in ["application/json", "Application/JSON; charset=utf-8"] {
        let (req, _) = raw_request("192.0.2.20:1", &[("content-type", ct)], PLAIN_BODY);
        assert_eq!(t.send(req).await.status(), StatusCode::OK, "{ct}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_announced_body_over_the_limit_is_413_at_once() {
    let t = test_app(|c| c.http.max_body_bytes = 1024);
    // The body never comes: only the header can answer this in time.
    let never = futures_util::stream::pending::<Result<Vec<u8>, std::io::Error>>();
    let req = generate_request(
        "192.0.2.21:1",
        Body::from_stream(never),
        &[("content-length", "10000000")],
    );
    let res = tokio::time::timeout(Duration::from_secs(1), t.send(req))
        .await
        .expect("answered without waiting for the body");
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(text(res).await, "The request body is too large.");
}

#[tokio::test]
async fn refused_requests_count_against_the_caller() {
    let t = test_app(|_| {});
    let peer = "192.0.2.22:1";
    let big = [("content-length", "10000000")];
    let attempts = [
        (
            generate_request(peer, "{oops", &[]),
            StatusCode::BAD_REQUEST,
        ),
        (
            raw_request(peer, &[("content-type", "text/plain")], PLAIN_BODY).0,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            raw_request(peer, &[], PLAIN_BODY).0,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            generate_request(peer, PLAIN_BODY, &big),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            generate_request(peer, r#"{"messages":[]}"#, &[]),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (i, (req, status)) in attempts.into_iter().enumerate() {
        let res = t.send(req).await;
        assert_eq!(res.status(), status);
        assert_eq!(
            h(res.headers(), "x-ratelimit-remaining"),
            (4 - i).to_string(),
            "the refusal was counted"
        );
    }
    assert_eq!(t.status_of(peer, &[]).await, StatusCode::TOO_MANY_REQUESTS);
}
