//! The gateway profile on Redis and on Redis Cluster: two service
//! processes (the real binary) share every limit of a tier, leases
//! included, and a process killed mid-stream frees its lease within the
//! lease TTL. Needs `redis-server` on PATH; the harness starts private
//! servers on free loopback ports.

mod common;

use std::time::{Duration, Instant};

use common::process::{ConfigFile, Process, START};
use ratelimit_redis_harness::{RedisCluster, RedisServer};
use serde_json::Value;

/// The anonymous tier only (both processes see the test as 127.0.0.1):
/// 6 requests an hour, a token bucket refilling 1,000 a day (so the
/// headers show exactly what is reserved), two streams with a 3 s TTL.
fn config(backend: &str) -> String {
    format!(
        r#"
{backend}

[tiers.anonymous]
max_output_tokens = 64

[[tiers.anonymous.limits]]
name = "requests"
algorithm = "fixed_window"
limit = 6
window = "1h"

[[tiers.anonymous.limits]]
name = "tokens"
algorithm = "token_bucket"
capacity = 1000
rate = "1000/1d"
settle = true

[[tiers.anonymous.limits]]
name = "streams"
algorithm = "concurrency"
limit = 2
lease_ttl = "3s"
"#
    )
}

/// One prompt token ("Hi") and the tier's 64: the estimate reserved.
const ESTIMATE: u64 = 1 + 64;

async fn post(client: &reqwest::Client, addr: std::net::SocketAddr) -> reqwest::Response {
    client
        .post(format!("http://{addr}/api/generate"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(r#"{"messages":[{"role":"user","content":"Hi"}]}"#)
        .send()
        .await
        .unwrap()
}

fn field(res: &reqwest::Response, name: &str) -> u64 {
    res.headers()[name].to_str().unwrap().parse().unwrap()
}

/// The `r` of the `"streams"` item of the `RateLimit` header.
fn streams_left(res: &reqwest::Response) -> u64 {
    let fields = res.headers()["ratelimit"].to_str().unwrap();
    let item = fields
        .split(", ")
        .find(|i| i.starts_with("\"streams\";"))
        .unwrap_or_else(|| panic!("no streams item: {fields}"));
    let r = item.split(';').find_map(|p| p.strip_prefix("r=")).unwrap();
    r.parse().unwrap()
}

async fn denied_by(res: reqwest::Response) -> String {
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.unwrap();
    body["error"]["policy"].as_str().unwrap().to_owned()
}

async fn share_every_limit(backend: &str) {
    // The "requests" window (1 h) must not turn before the last count.
    common::clear_of_window_edge(Duration::from_secs(3600), 2 * START).await;
    let file = ConfigFile::new("gateway-redis", &config(backend));
    // Words every 100 ms: an answer streams for seconds.
    let envs = [("RATELIMIT_DELTA_DELAY", "100ms")];
    let mut a = Process::start(&["--config", file.arg()], &envs, "info");
    let mut b = Process::start(&["--config", file.arg()], &envs, "info");
    let (addr_a, addr_b) = (a.addr(), b.addr());
    assert!(a
        .lines()
        .iter()
        .any(|l| l.contains("as an LLM gateway") && l.contains("Redis")));
    let client = reqwest::Client::new();

    // One stream through each process: counts, reservations and leases
    // add up across them.
    let first = post(&client, addr_a).await;
    assert_eq!(first.status(), 200);
    assert_eq!(field(&first, "x-ratelimit-remaining-requests"), 5);
    assert_eq!(
        field(&first, "x-ratelimit-remaining-tokens"),
        1000 - ESTIMATE
    );
    assert_eq!(streams_left(&first), 1);
    let second = post(&client, addr_b).await;
    assert_eq!(second.status(), 200);
    assert_eq!(field(&second, "x-ratelimit-remaining-requests"), 4);
    assert_eq!(
        field(&second, "x-ratelimit-remaining-tokens"),
        1000 - 2 * ESTIMATE
    );
    assert_eq!(streams_left(&second), 0);

    // Both streams run: either process denies a third, for streams alone
    // (and counts nothing).
    assert_eq!(denied_by(post(&client, addr_a).await).await, "streams");
    assert_eq!(denied_by(post(&client, addr_b).await).await, "streams");

    // B dies mid-stream, releasing nothing: its lease is still held...
    b.kill();
    drop(second);
    assert_eq!(denied_by(post(&client, addr_a).await).await, "streams");
    // ...until its TTL (3 s, no longer renewed) frees it.
    let killed = Instant::now();
    let third = loop {
        let res = post(&client, addr_a).await;
        if res.status() == 200 {
            break res;
        }
        assert_eq!(denied_by(res).await, "streams");
        assert!(
            killed.elapsed() < START,
            "the dead process's lease was never freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(field(&third, "x-ratelimit-remaining-requests"), 3);
    assert_eq!(streams_left(&third), 0);
    // The first stream is still running in A and holds its lease.
    drop((first, third));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_redis_share_every_limit_and_a_dead_ones_lease_expires() {
    let redis = RedisServer::start();
    share_every_limit(&format!(
        "[backend]\nkind = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_a_redis_cluster_share_every_limit_and_a_dead_ones_lease_expires() {
    let cluster = RedisCluster::start();
    let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("{u:?}")).collect();
    share_every_limit(&format!(
        "[backend]\nkind = \"redis\"\ncluster = [{}]\n",
        nodes.join(", ")
    ))
    .await;
}
