//! What a client sees when the limiter cannot decide, or a failure policy
//! decided instead of the store; and what the logs say about it.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use ratelimit_core::{Decision, FailurePolicy, Policy};
use ratelimit_testkit::Capture;
use ratelimit_tower::{PlainResponse, RateLimitLayer};
use support::*;
use tower::Layer;
use tracing::Level;

fn policy() -> Policy {
    Policy::fixed_window(5, Duration::from_secs(30)).unwrap()
}

/// A denial a fail-closed policy makes: nothing counted, "retry in 2.3 s".
fn closed() -> Decision {
    Decision::denied(5, 0, Duration::ZERO, Duration::from_millis(2_300))
        .with_degraded(FailurePolicy::Closed)
}

fn open() -> Decision {
    Decision::allowed(5, 5, Duration::ZERO).with_degraded(FailurePolicy::Open)
}

fn fallback_allowed() -> Decision {
    Decision::allowed(5, 3, Duration::from_secs(20)).with_degraded(FailurePolicy::Fallback)
}

fn fallback_denied() -> Decision {
    Decision::denied(5, 0, Duration::from_secs(20), Duration::from_millis(3_500))
        .with_degraded(FailurePolicy::Fallback)
}

const UNAVAILABLE: &str = "Rate limiting is unavailable; try again shortly.";

#[tokio::test]
async fn fail_closed_is_503_with_retry_after_and_no_quota() {
    let calls = Arc::new(AtomicUsize::new(0));
    let limiter = Scripted::new(policy(), Answer::Decide(closed()));
    let svc = RateLimitLayer::new(limiter).layer(counting_service(calls.clone()));

    let res = send(&svc, request("192.0.2.1:1", &[])).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(res.headers(), "retry-after"), "3", "2.3 s rounds up");
    assert_no_quota_headers(res.headers());
    assert_eq!(body_text(res).await, UNAVAILABLE);
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn fail_closed_uses_the_configured_unavailable_response() {
    let limiter = Scripted::new(policy(), Answer::Decide(closed()));
    let svc = RateLimitLayer::new(limiter)
        .with_unavailable_response(PlainResponse::new(StatusCode::SERVICE_UNAVAILABLE, "Busy"))
        .layer(counting_service(Arc::default()));
    let res = send(&svc, request("192.0.2.1:1", &[])).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body_text(res).await, "Busy");
}

#[tokio::test]
async fn fail_closed_without_a_wait_still_says_one_second() {
    let mut decision = Decision::allowed(5, 0, Duration::ZERO).with_degraded(FailurePolicy::Closed);
    decision.allowed = false;
    let limiter = Scripted::new(policy(), Answer::Decide(decision));
    let svc = RateLimitLayer::new(limiter).layer(counting_service(Arc::default()));
    let res = send(&svc, request("192.0.2.1:1", &[])).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(res.headers(), "retry-after"), "1");
}

#[tokio::test]
async fn fail_open_passes_without_invented_numbers() {
    let calls = Arc::new(AtomicUsize::new(0));
    let limiter = Scripted::new(policy(), Answer::Decide(open()));
    let svc = RateLimitLayer::new(limiter).layer(counting_service(calls.clone()));

    let res = send(&svc, request("192.0.2.1:1", &[])).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_no_quota_headers(res.headers());
    assert!(res.headers().get("retry-after").is_none());
    assert_eq!(body_text(res).await, "hello");
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn fallback_allowed_passes_without_quota_headers() {
    let limiter = Scripted::new(policy(), Answer::Decide(fallback_allowed()));
    let svc = RateLimitLayer::new(limiter).layer(counting_service(Arc::default()));
    let res = send(&svc, request("192.0.2.1:1", &[])).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_no_quota_headers(res.headers());
    assert!(res.headers().get("retry-after").is_none());
    assert_eq!(body_text(res).await, "hello");
}

#[tokio::test]
async fn fallback_denied_is_429_with_retry_after_only() {
    let calls = Arc::new(AtomicUsize::new(0));
    let limiter = Scripted::new(policy(), Answer::Decide(fallback_denied()));
    let svc = RateLimitLayer::new(limiter).layer(counting_service(calls.clone()));
    let res = send(&svc, request("192.0.2.1:1", &[])).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(res.headers(), "retry-after"), "4");
    assert_no_quota_headers(res.headers());
    assert_eq!(body_text(res).await, "Ratelimited!");
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn degraded_headers_when_asked_for() {
    let limiter = Scripted::new(policy(), Answer::Decide(closed()));
    let svc = RateLimitLayer::new(limiter.clone())
        .with_degraded_headers(true)
        .layer(counting_service(Arc::default()));

    let res = send(&svc, request("192.0.2.1:1", &[])).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_quota_headers(res.headers());
    assert_eq!(header(res.headers(), "ratelimit"), r#""default";r=0;t=0"#);
    assert_eq!(header(res.headers(), "retry-after"), "3");

    limiter.set(Answer::Decide(fallback_denied()));
    let res = send(&svc, request("192.0.2.1:1", &[])).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_quota_headers(res.headers());
    assert_eq!(header(res.headers(), "ratelimit"), r#""default";r=0;t=4"#);
    assert_eq!(header(res.headers(), "retry-after"), "4");

    limiter.set(Answer::Decide(fallback_allowed()));
    let res = send(&svc, request("192.0.2.1:1", &[])).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(res.headers(), "ratelimit"), r#""default";r=3;t=20"#);
    assert!(res.headers().get("retry-after").is_none());

    limiter.set(Answer::Decide(open()));
    let res = send(&svc, request("192.0.2.1:1", &[])).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(res.headers(), "x-ratelimit-remaining"), "5");
}

#[tokio::test]
async fn an_error_is_503_with_a_one_second_retry_after_and_no_leak() {
    let calls = Arc::new(AtomicUsize::new(0));
    let limiter = Scripted::new(policy(), Answer::Fail);
    let svc = RateLimitLayer::new(limiter).layer(counting_service(calls.clone()));
    let res = send(&svc, request("192.0.2.1:1", &[])).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(res.headers(), "retry-after"), "1");
    assert_no_quota_headers(res.headers());
    let text = body_text(res).await;
    assert_eq!(text, UNAVAILABLE);
    assert!(!text.contains("cache-7"), "{text}");
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn an_outage_logs_one_warn_and_its_end_one_info() {
    let (logs, _guard) = Capture::install();
    let limiter = Scripted::new(policy(), Answer::Fail);
    let layer = RateLimitLayer::new(limiter.clone());
    // Two services of one layer (two routes) share the outage.
    let a = layer.layer(counting_service(Arc::default()));
    let b = layer.layer(counting_service(Arc::default()));

    for i in 0..50 {
        let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
        let res = send(&svc, request("192.0.2.1:1", &[])).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let warns = logs.events(Level::WARN);
    assert_eq!(warns.len(), 1, "{warns:?}");
    assert!(
        warns[0].contains("connection refused: cache-7.internal:6379"),
        "the cause is in the WARN: {}",
        warns[0]
    );
    assert_eq!(logs.events(Level::DEBUG).len(), 49);
    assert!(logs.events(Level::INFO).is_empty());

    limiter.set(Answer::Decide(Decision::allowed(
        5,
        4,
        Duration::from_secs(30),
    )));
    for _ in 0..3 {
        let res = send(&a, request("192.0.2.1:1", &[])).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let infos = logs.events(Level::INFO);
    assert_eq!(infos.len(), 1, "{infos:?}");
    assert!(infos[0].contains("errors=50"), "{}", infos[0]);

    // The next outage is a new transition.
    limiter.set(Answer::Fail);
    send(&b, request("192.0.2.1:1", &[])).await;
    assert_eq!(logs.events(Level::WARN).len(), 2);
    assert!(logs.all().iter().all(|l| l.level != Level::ERROR));
}

#[tokio::test]
async fn degraded_decisions_log_at_debug_only() {
    let (logs, _guard) = Capture::install();
    let limiter = Scripted::new(policy(), Answer::Decide(closed()));
    let svc = RateLimitLayer::new(limiter.clone()).layer(counting_service(Arc::default()));
    for answer in [closed(), open(), fallback_allowed(), fallback_denied()] {
        limiter.set(Answer::Decide(answer));
        send(&svc, request("192.0.2.1:1", &[])).await;
    }
    let lines = logs.all();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines.iter().all(|l| l.level == Level::DEBUG), "{lines:?}");
    assert!(lines[0].text.contains("policy=closed"), "{lines:?}");
}
