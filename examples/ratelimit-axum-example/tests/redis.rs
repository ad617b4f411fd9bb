//! The Redis backend: two service processes share one count. Needs
//! `redis-server` on PATH (`apt-get install -y redis-server`); the test
//! starts and stops its own private server on a free loopback port.

mod common;

use common::process::{Process, START};
use common::PLAIN_BODY;
use ratelimit_redis_harness::RedisServer;

async fn post(client: &reqwest::Client, addr: std::net::SocketAddr) -> reqwest::Response {
    client
        .post(format!("http://{addr}/api/generate"))
        .header("content-type", "application/json")
        .body(PLAIN_BODY)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_service_processes_sharing_one_redis_enforce_one_limit() {
    // The 1 h window must not turn between the counts.
    common::clear_of_window_edge(
        std::time::Duration::from_secs(3600),
        std::time::Duration::from_secs(60),
    )
    .await;
    let redis = RedisServer::start();
    let url = redis.url();
    let envs = [("RATELIMIT_DELTA_DELAY", "0ms"), ("RATELIMIT_RATE", "5/1h")];
    let mut a = Process::start(&["--redis-url", &url], &envs, "info");
    let addr_a = a.addr();
    let mut b = Process::start(
        &[],
        &[envs[0], envs[1], ("REDIS_URL", url.as_str())],
        "info",
    );
    let addr_b = b.addr();

    let client = reqwest::Client::new();
    let mut remaining = Vec::new();
    for addr in [addr_a, addr_b, addr_a, addr_b, addr_a] {
        let res = post(&client, addr).await;
        assert_eq!(res.status(), 200);
        remaining.push(
            res.headers()["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        assert!(res.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    }
    assert_eq!(
        remaining,
        ["4", "3", "2", "1", "0"],
        "one count across both processes"
    );
    for addr in [addr_b, addr_a] {
        let res = post(&client, addr).await;
        assert_eq!(res.status(), 429);
        assert!(res.headers().contains_key("retry-after"));
        assert_eq!(res.text().await.unwrap(), "Ratelimited!");
    }
}

#[test]
fn an_unreachable_redis_stops_start_up_with_a_reason() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut service = Process::start(&["--redis-url", &url], &[], "info");
    assert!(!service.exits_within(START).success());
    let err = service.output();
    assert!(err.contains("cannot start the Redis backend"), "{err}");
}
