//! The service over a real loopback socket, with a real HTTP client.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    xff: Option<&str>,
) -> reqwest::Response {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(xff) = xff {
        req = req.header("x-forwarded-for", xff);
    }
    req.send().await.unwrap()
}

fn h<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn sixth_request_over_the_socket_is_429() {
    let t = test_app(|_| {});
    let addr = serve(t.router).await;
    let url = format!("http://{addr}/api/generate");
    let client = reqwest::Client::new();
    for i in 1..=5u32 {
        let res = post(&client, &url, PLAIN_BODY, None).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(h(&res, "content-type"), "text/event-stream");
        assert_eq!(
            h(&res, "ratelimit"),
            format!(r#""default";r={};t=30"#, 5 - i)
        );
        assert_eq!(h(&res, "x-ratelimit-remaining"), (5 - i).to_string());
        let chunks = chunks(&res.text().await.unwrap());
        assert_eq!(shape(&chunks).first().map(String::as_str), Some("start"));
    }
    t.clock.advance(Duration::from_millis(10_500));
    let res = post(&client, &url, PLAIN_BODY, None).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h(&res, "retry-after"), "20");
    assert_eq!(h(&res, "ratelimit-policy"), r#""default";q=5;w=30"#);
    assert_eq!(h(&res, "ratelimit"), r#""default";r=0;t=20"#);
    assert_eq!(h(&res, "x-ratelimit-limit"), "5");
    assert_eq!(h(&res, "x-ratelimit-reset"), "20");
    assert_eq!(h(&res, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(res.text().await.unwrap(), "Ratelimited!");
}

#[tokio::test]
async fn forged_x_forwarded_for_over_the_socket_is_ignored() {
    // The loopback peer is not a trusted proxy here.
    let t = test_app(|c| c.client_ip.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()]);
    let addr = serve(t.router).await;
    let url = format!("http://{addr}/api/generate");
    let client = reqwest::Client::new();
    for i in 0..5 {
        let res = post(&client, &url, PLAIN_BODY, Some(&format!("198.51.100.{i}"))).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.text().await.unwrap();
    }
    let res = post(&client, &url, PLAIN_BODY, Some("198.51.100.77")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(t.limiter.peek(b"127.0.0.1/32").await.unwrap().remaining, 0);
}

#[tokio::test]
async fn behind_a_trusted_loopback_proxy_clients_are_told_apart() {
    let t = test_app(|c| c.client_ip.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()]);
    let addr = serve(t.router).await;
    let url = format!("http://{addr}/api/generate");
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let res = post(&client, &url, PLAIN_BODY, Some("1.2.3.4, 203.0.113.1")).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.text().await.unwrap();
    }
    let res = post(&client, &url, PLAIN_BODY, Some("9.9.9.9, 203.0.113.1")).await;
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the forged left hop changes nothing"
    );
    let res = post(&client, &url, PLAIN_BODY, Some("203.0.113.2")).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "another client behind the proxy"
    );
    res.text().await.unwrap();
}

#[tokio::test]
async fn malformed_and_oversized_bodies_over_the_socket() {
    let t = test_app(|c| c.http.max_body_bytes = 256);
    let addr = serve(t.router).await;
    let url = format!("http://{addr}/api/generate");
    let client = reqwest::Client::new();
    let res = post(&client, &url, "{oops", None).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().await.unwrap().starts_with("Malformed JSON body"));
    let res = post(&client, &url, &"x".repeat(1000), None).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(res.text().await.unwrap(), "The request body is too large.");
}
