//! The README's route, driven without a socket: one dependency protects
//! an axum route with the memory backend, keyed by the client's address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use ratelimit_kit::{ManualClock, MemoryLimiter, Policy, RateLimitLayer};
use tower::ServiceExt;

fn app(client: SocketAddr, clock: ManualClock) -> Router {
    let policy = Policy::fixed_window(5, Duration::from_secs(30)).unwrap();
    let limiter = MemoryLimiter::with_clock(policy, clock);
    Router::new()
        .route("/", get(|| async { "hello" }))
        .layer(RateLimitLayer::new(Arc::new(limiter)))
        // What `into_make_service_with_connect_info` gives each connection.
        .layer(MockConnectInfo(client))
}

async fn status(app: &Router) -> StatusCode {
    let request = Request::get("/").body(Body::empty()).unwrap();
    app.clone().oneshot(request).await.unwrap().status()
}

#[tokio::test]
async fn the_sixth_request_of_a_client_in_a_window_is_refused() {
    let clock = ManualClock::new(0); // the start of a window
    let app = app(([203, 0, 113, 7], 50_000).into(), clock.clone());
    for _ in 0..5 {
        assert_eq!(status(&app).await, StatusCode::OK);
    }
    assert_eq!(status(&app).await, StatusCode::TOO_MANY_REQUESTS);

    clock.advance(Duration::from_secs(30));
    assert_eq!(status(&app).await, StatusCode::OK);
}

#[tokio::test]
async fn clients_are_counted_apart() {
    let policy = Policy::fixed_window(1, Duration::from_secs(30)).unwrap();
    let limiter = Arc::new(MemoryLimiter::with_clock(policy, ManualClock::new(0)));
    // One limiter, two connections from different clients.
    let route = |client: SocketAddr| {
        Router::new()
            .route("/", get(|| async { "hello" }))
            .layer(RateLimitLayer::new(limiter.clone()))
            .layer(MockConnectInfo(client))
    };
    let a = route(([203, 0, 113, 7], 1).into());
    let b = route(([198, 51, 100, 9], 1).into());
    assert_eq!(status(&a).await, StatusCode::OK);
    assert_eq!(status(&a).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(status(&b).await, StatusCode::OK);
}
