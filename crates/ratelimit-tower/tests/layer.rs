//! The layer in front of a trivial service, driven with `oneshot`.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Request, StatusCode};
use ratelimit_core::{Decision, Error, Limiter, ManualClock, Policy, ReferenceLimiter};
use ratelimit_tower::{ClientIp, ProxyHeader, RateLimitHeaders, RateLimitLayer};
use support::*;
use tower::{Layer, ServiceExt};

fn five_per_30s(clock: &ManualClock) -> Arc<dyn Limiter> {
    let policy = Policy::fixed_window(5, Duration::from_secs(30)).unwrap();
    Arc::new(ReferenceLimiter::with_clock(policy, clock.clone()))
}

#[tokio::test]
async fn sixth_request_in_the_window_is_429_with_headers() {
    // Window-aligned time, so the window has exactly 30 s to run.
    let clock = ManualClock::new(1_800_000_000_000_000);
    let svc = RateLimitLayer::new(five_per_30s(&clock)).layer(ok_service());

    for i in 1..=5u64 {
        let res = send(&svc, request("203.0.113.7:1000", &[])).await;
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers();
        assert_eq!(header(h, "ratelimit-policy"), r#""default";q=5;w=30"#);
        assert_eq!(
            header(h, "ratelimit"),
            format!(r#""default";r={};t=30"#, 5 - i)
        );
        assert_eq!(header(h, "x-ratelimit-limit"), "5");
        assert_eq!(header(h, "x-ratelimit-remaining"), (5 - i).to_string());
        assert_eq!(header(h, "x-ratelimit-reset"), "30");
        assert!(h.get("retry-after").is_none());
        assert_eq!(body_text(res).await, "hello");
    }

    clock.advance(Duration::from_millis(12_300));
    let res = send(&svc, request("203.0.113.7:1001", &[])).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let h = res.headers();
    assert_eq!(header(h, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(header(h, "retry-after"), "18", "17.7 s rounds up");
    assert_eq!(header(h, "ratelimit"), r#""default";r=0;t=18"#);
    assert_eq!(header(h, "x-ratelimit-remaining"), "0");
    assert_eq!(header(h, "x-ratelimit-reset"), "18");
    assert_eq!(body_text(res).await, "Ratelimited!");

    // Another client is untouched.
    let res = send(&svc, request("203.0.113.8:1000", &[])).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn retry_after_of_a_fraction_of_a_second_is_one() {
    let clock = ManualClock::new(1_800_000_000_000_000);
    let svc = RateLimitLayer::new(five_per_30s(&clock)).layer(ok_service());
    for _ in 0..5 {
        send(&svc, request("192.0.2.1:1", &[])).await;
    }
    clock.advance(Duration::from_millis(29_700));
    let res = send(&svc, request("192.0.2.1:1", &[])).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(res.headers(), "retry-after"),
        "1",
        "300 ms is 1, never 0"
    );

    clock.advance(Duration::from_millis(300));
    let res = send(&svc, request("192.0.2.1:1", &[])).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "after Retry-After the request fits"
    );
}

/// The rate-limit fields of `headers`, by name, sorted.
fn rate_limit_fields(headers: &http::HeaderMap) -> Vec<&str> {
    let mut names: Vec<&str> = headers
        .keys()
        .map(http::HeaderName::as_str)
        .filter(|n| n.contains("ratelimit") || *n == "retry-after")
        .collect();
    names.sort_unstable();
    names
}

#[tokio::test]
async fn each_family_of_fields_can_be_turned_off() {
    let layer = |ietf: bool, legacy: bool, clock: &ManualClock| {
        let headers = RateLimitHeaders::default()
            .with_ietf_fields(ietf)
            .with_legacy_fields(legacy);
        RateLimitLayer::new(five_per_30s(clock))
            .with_headers(headers)
            .layer(ok_service())
    };
    let ietf = ["ratelimit", "ratelimit-policy"];
    let legacy = [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ];
    for (on_ietf, on_legacy) in [(true, true), (true, false), (false, true), (false, false)] {
        let clock = ManualClock::new(1_800_000_000_000_000);
        let svc = layer(on_ietf, on_legacy, &clock);
        let mut expected: Vec<&str> = Vec::new();
        if on_ietf {
            expected.extend(ietf);
        }
        if on_legacy {
            expected.extend(legacy);
        }
        expected.sort_unstable();
        for _ in 0..5 {
            let res = send(&svc, request("192.0.2.1:1", &[])).await;
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(rate_limit_fields(res.headers()), expected);
        }
        let res = send(&svc, request("192.0.2.1:1", &[])).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        expected.push("retry-after");
        expected.sort_unstable();
        assert_eq!(
            rate_limit_fields(res.headers()),
            expected,
            "Retry-After on every denial"
        );
        assert_eq!(header(res.headers(), "retry-after"), "30");
    }
}

#[tokio::test]
async fn forged_x_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let clock = ManualClock::new(1_800_000_000_000_000);
    let layer = RateLimitLayer::new(five_per_30s(&clock))
        .with_key_extractor(ClientIp::new().with_trusted_proxies(["10.0.0.0/8".parse().unwrap()]));
    let svc = layer.layer(ok_service());
    for i in 0..5 {
        let forged = format!("198.51.100.{i}");
        let res = send(
            &svc,
            request("203.0.113.7:1", &[("x-forwarded-for", &forged)]),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = send(
        &svc,
        request("203.0.113.7:1", &[("x-forwarded-for", "198.51.100.99")]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn trusted_proxy_chain_is_read_right_to_left() {
    let clock = ManualClock::new(1_800_000_000_000_000);
    let client_ip = ClientIp::new().with_trusted_proxies([
        "10.0.0.0/8".parse().unwrap(),
        "2001:db8:ffff::/48".parse().unwrap(),
    ]);
    let svc = RateLimitLayer::new(five_per_30s(&clock))
        .with_key_extractor(client_ip.clone())
        .layer(ok_service());

    // The client forged the leftmost hop; the proxies appended the rest.
    let chain = [(
        "x-forwarded-for",
        "1.1.1.1, 203.0.113.50, 10.0.0.9, 2001:db8:ffff::2",
    )];
    for _ in 0..5 {
        let res = send(&svc, request("10.0.0.1:1", &chain)).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    // Same client through another trusted hop and a different forgery.
    let other_path = [("x-forwarded-for", "8.8.8.8, 203.0.113.50, 10.200.0.1")];
    let res = send(&svc, request("10.0.0.2:1", &other_path)).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);

    let (parts, ()) = request("10.0.0.1:1", &chain).into_parts();
    use ratelimit_tower::KeyExtractor as _;
    assert_eq!(client_ip.extract(&parts).unwrap(), b"203.0.113.50/32");
}

#[tokio::test]
async fn forwarded_header_when_configured() {
    let client_ip = ClientIp::new()
        .with_trusted_proxies(["127.0.0.0/8".parse().unwrap()])
        .with_header(ProxyHeader::Forwarded);
    let (parts, ()) = request(
        "127.0.0.1:9",
        &[
            (
                "forwarded",
                r#"for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711""#,
            ),
            ("x-forwarded-for", "198.51.100.1"),
        ],
    )
    .into_parts();
    use ratelimit_tower::KeyExtractor as _;
    assert_eq!(client_ip.extract(&parts).unwrap(), b"2001:db8:cafe::/64");
}

#[tokio::test]
async fn ipv6_clients_are_grouped_by_64() {
    let clock = ManualClock::new(1_800_000_000_000_000);
    let svc = RateLimitLayer::new(five_per_30s(&clock)).layer(ok_service());
    for i in 1..=5 {
        let peer = format!("[2001:db8:1:2:{i:x}::{i:x}]:443");
        let res = send(&svc, request(&peer, &[])).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = send(&svc, request("[2001:db8:1:2:ffff:ffff:ffff:ffff]:443", &[])).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "same /64");
    let res = send(&svc, request("[2001:db8:1:3::1]:443", &[])).await;
    assert_eq!(res.status(), StatusCode::OK, "next /64 is another client");
}

#[tokio::test]
async fn missing_peer_address_is_the_configured_response_not_500() {
    let clock = ManualClock::new(0);
    let svc = RateLimitLayer::new(five_per_30s(&clock)).layer(ok_service());
    let res = send(&svc, Request::new(())).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_text(res).await, "Could not identify the client.");
}

#[tokio::test]
async fn axum_connect_info_is_a_peer_address() {
    let clock = ManualClock::new(0);
    let svc = RateLimitLayer::new(five_per_30s(&clock)).layer(ok_service());
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(SocketAddr::from((
            [192, 0, 2, 3],
            7,
        ))));
    assert_eq!(send(&svc, req).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn zero_cost_bypasses_and_oversized_cost_is_429_without_retry_after() {
    let clock = ManualClock::new(0);
    let svc = RateLimitLayer::new(five_per_30s(&clock))
        .with_cost(|parts: &http::request::Parts| match parts.uri.path() {
            "/health" => 0,
            "/huge" => 6,
            _ => 1,
        })
        .layer(ok_service());
    let mut health = request("192.0.2.1:1", &[]);
    *health.uri_mut() = "/health".parse().unwrap();
    let res = send(&svc, health).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("ratelimit").is_none());

    let mut huge = request("192.0.2.1:1", &[]);
    *huge.uri_mut() = "/huge".parse().unwrap();
    let res = send(&svc, huge).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().get("retry-after").is_none());
    // What the policy says, so the client sees its cost can never fit...
    assert_eq!(header(res.headers(), "x-ratelimit-limit"), "5");
    assert_eq!(
        header(res.headers(), "ratelimit-policy"),
        r#""default";q=5;w=30"#
    );
    // ...and no state of the key, which the limiter never read.
    for name in ["ratelimit", "x-ratelimit-remaining", "x-ratelimit-reset"] {
        assert!(res.headers().get(name).is_none(), "{name}");
    }
}

/// A backend that never answers.
#[derive(Debug)]
struct Hung(Vec<Policy>);

#[async_trait]
impl Limiter for Hung {
    async fn check(&self, _key: &[u8], _cost: u64) -> Result<Decision, Error> {
        std::future::pending().await
    }
    async fn peek(&self, _key: &[u8]) -> Result<Decision, Error> {
        std::future::pending().await
    }
    async fn reset(&self, _key: &[u8]) -> Result<(), Error> {
        std::future::pending().await
    }
    fn policies(&self) -> &[Policy] {
        &self.0
    }
}

fn policies() -> Vec<Policy> {
    vec![Policy::fixed_window(5, Duration::from_secs(30)).unwrap()]
}

#[tokio::test]
async fn backend_error_is_503_without_leaking() {
    let down = Scripted::new(policies()[0], Answer::Fail);
    let svc = RateLimitLayer::new(down).layer(ok_service());
    let res = send(&svc, request("192.0.2.1:1", &[])).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = body_text(res).await;
    assert!(!text.contains("cache-7"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_hung_backend_times_out_instead_of_hanging() {
    let svc = RateLimitLayer::new(Arc::new(Hung(policies())))
        .with_check_timeout(Some(Duration::from_millis(200)))
        .layer(ok_service());
    // Paused time jumps to the timeout as soon as everything is idle.
    let res = send(&svc, request("192.0.2.1:1", &[])).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(res.headers(), "retry-after"), "1");
    assert!(res.headers().get("ratelimit").is_none());
}

/// A backend that answers after `delay`, as the reference limiter would.
#[derive(Debug)]
struct Slow {
    limiter: ReferenceLimiter,
    delay: Duration,
}

#[async_trait]
impl Limiter for Slow {
    async fn check(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
        tokio::time::sleep(self.delay).await;
        self.limiter.check(key, cost).await
    }
    async fn peek(&self, key: &[u8]) -> Result<Decision, Error> {
        self.limiter.peek(key).await
    }
    async fn reset(&self, key: &[u8]) -> Result<(), Error> {
        self.limiter.reset(key).await
    }
    fn policies(&self) -> &[Policy] {
        self.limiter.policies()
    }
}

#[tokio::test(start_paused = true)]
async fn a_check_that_waits_is_timed_from_its_first_poll() {
    let slow = |delay| {
        let limiter = ReferenceLimiter::new(policies()[0]);
        RateLimitLayer::new(Arc::new(Slow { limiter, delay }))
            .with_check_timeout(Some(Duration::from_millis(200)))
            .layer(ok_service())
    };
    // Within the timeout: the decision, with its quota.
    let res = send(
        &slow(Duration::from_millis(150)),
        request("192.0.2.1:1", &[]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(res.headers(), "x-ratelimit-remaining"), "4");
    // Past it: the check is abandoned.
    let res = send(
        &slow(Duration::from_millis(250)),
        request("192.0.2.1:1", &[]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().get("ratelimit").is_none());
}

#[tokio::test]
async fn works_as_an_axum_layer() {
    let clock = ManualClock::new(0);
    let limiter = five_per_30s(&clock);
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "hi" }))
        .layer(RateLimitLayer::new(limiter))
        .layer(axum::extract::connect_info::MockConnectInfo(
            SocketAddr::from(([192, 0, 2, 1], 1)),
        ));
    for _ in 0..5 {
        let res = app
            .clone()
            .oneshot(Request::get("/").body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = app
        .oneshot(Request::get("/").body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// A limiter that answers only when awaited: `check_now` is the default
/// `None`, so the layer takes its boxed path.
struct Awaited(Arc<dyn Limiter>);

#[async_trait]
impl Limiter for Awaited {
    async fn check(&self, key: &[u8], cost: u64) -> Result<Decision, Error> {
        self.0.check(key, cost).await
    }
    async fn peek(&self, key: &[u8]) -> Result<Decision, Error> {
        self.0.peek(key).await
    }
    async fn reset(&self, key: &[u8]) -> Result<(), Error> {
        self.0.reset(key).await
    }
    fn policies(&self) -> &[Policy] {
        self.0.policies()
    }
}

#[tokio::test]
async fn a_limiter_answering_at_once_gives_the_responses_of_an_awaited_one() {
    let clock = ManualClock::new(1_800_000_000_000_000);
    let at_once = five_per_30s(&clock);
    assert!(at_once.check_now(b"probe", 1).is_some());
    let awaited: Arc<dyn Limiter> = Arc::new(Awaited(five_per_30s(&clock)));
    assert!(awaited.check_now(b"probe", 1).is_none());
    let layer = |limiter| {
        RateLimitLayer::new(limiter)
            .with_cost(|parts: &http::request::Parts| match parts.uri.path() {
                "/free" => 0,
                "/huge" => 6,
                "/two" => 2,
                _ => 1,
            })
            .layer(ok_service())
    };
    let (a, b) = (layer(at_once), layer(awaited));
    let paths = ["/", "/two", "/free", "/huge", "/", "/two", "/", "/"];
    for (i, path) in paths.iter().cycle().take(24).enumerate() {
        if i % 7 == 6 {
            clock.advance(Duration::from_secs(11));
        }
        let req = || {
            let mut req = request("198.51.100.4:1", &[]);
            *req.uri_mut() = path.parse().unwrap();
            req
        };
        let (x, y) = (send(&a, req()).await, send(&b, req()).await);
        assert_eq!(x.status(), y.status(), "request {i} to {path}");
        assert_eq!(x.headers(), y.headers(), "request {i} to {path}");
        assert_eq!(body_text(x).await, body_text(y).await);
    }
}

#[test]
fn client_ip_builds_the_same_key_inline_as_in_a_vector() {
    use ratelimit_tower::{Key, KeyExtractor as _};
    let client_ip = ClientIp::new().with_trusted_proxies(["10.0.0.0/8".parse().unwrap()]);
    let cases: [(&str, &[(&str, &str)]); 6] = [
        ("203.0.113.7:1", &[]),
        ("[2001:db8:cafe:1:2:3:4:5]:1", &[]),
        ("[::ffff:198.51.100.9]:1", &[]),
        (
            "10.0.0.1:1",
            &[("x-forwarded-for", "8.8.8.8, 203.0.113.50")],
        ),
        (
            "10.0.0.1:1",
            &[("x-forwarded-for", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")],
        ),
        ("10.0.0.1:1", &[("x-forwarded-for", "not an address")]),
    ];
    for (peer, headers) in cases {
        let (parts, ()) = request(peer, headers).into_parts();
        let key = client_ip.extract_key(&parts).unwrap();
        assert_eq!(Some(key.clone()), client_ip.extract(&parts).map(Key::from));
        assert!(!key.is_empty(), "{peer} {headers:?}");
    }
    let (mut parts, ()) = request("203.0.113.7:1", &[]).into_parts();
    parts.extensions.clear();
    assert_eq!(client_ip.extract_key(&parts), None, "no peer, no key");
}
