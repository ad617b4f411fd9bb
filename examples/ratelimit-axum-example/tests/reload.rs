//! Reloading the gateway profile in the real binary (memory backend):
//! under concurrent requests, a new file (seen by the file watch, then by
//! SIGHUP) changes the limits without resetting a count and without
//! failing a request; a bad file is rejected with an error that quotes no
//! secret, and the configuration in force keeps running.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::process::{ConfigFile, Process};

const SECRET: &str = "reload-test-secret-0123456789";

/// The anonymous tier with `requests` per hour; a free tier for one key.
fn profile(requests: u64, secret_line: &str) -> String {
    format!(
        r#"
[gateway]
{secret_line}

[[keys]]
hash = "{hash}"
tier = "free"

[tiers.anonymous]
max_output_tokens = 16

[[tiers.anonymous.limits]]
name = "requests"
algorithm = "fixed_window"
limit = {requests}
window = "1h"

[[tiers.anonymous.limits]]
name = "tokens"
algorithm = "token_bucket"
capacity = 1000000
rate = "1000000/1h"
settle = true

[[tiers.anonymous.limits]]
name = "streams"
algorithm = "concurrency"
limit = 64
lease_ttl = "30s"

[tiers.free]
max_output_tokens = 16

[[tiers.free.limits]]
name = "requests"
algorithm = "fixed_window"
limit = 10
window = "1h"

[[tiers.free.limits]]
name = "tokens"
algorithm = "token_bucket"
capacity = 1000
rate = "1000/1h"
settle = true
"#,
        hash = ratelimit_axum_example::KeyHasher::new(ratelimit_axum_example::Secret::new(
            SECRET.to_owned()
        ))
        .unwrap()
        .hex(b"sk-reload"),
    )
}

fn good(requests: u64) -> String {
    profile(requests, &format!("key_secret = \"{SECRET}\""))
}

/// Requests until told to stop, from `workers` tasks; every answer's
/// status and `requests` remaining, in the order they came.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(u16, u64)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client = reqwest::Client::new();
        let tasks = (0..workers)
            .map(|_| {
                let (stop, seen, client) = (Arc::clone(&stop), Arc::clone(&seen), client.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let res = client
                            .post(format!("http://{addr}/api/generate"))
                            .header("content-type", "application/json")
                            .body(r#"{"messages":[{"role":"user","content":"Hi"}]}"#)
                            .send()
                            .await
                            .unwrap();
                        let status = res.status().as_u16();
                        let remaining = res
                            .headers()
                            .get("x-ratelimit-remaining-requests")
                            .and_then(|v| v.to_str().ok()?.parse().ok())
                            .unwrap_or(u64::MAX);
                        // The whole answer, so a stream cut by a reload
                        // would show as an error here.
                        let body = res.text().await.unwrap();
                        assert!(
                            status != 200 || body.ends_with("data: [DONE]\n\n"),
                            "{body}"
                        );
                        seen.lock().unwrap().push((status, remaining));
                    }
                })
            })
            .collect();
        Self { stop, seen, tasks }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    async fn until_more(&self, n: usize) {
        let target = self.count() + n;
        while self.count() < target {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    async fn finish(self) -> Vec<(u16, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(self.seen).unwrap().into_inner().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_keeps_counts_fails_nothing_and_rejects_a_bad_file() {
    let file = ConfigFile::new("reload", &good(100_000));
    let mut service = Process::start(
        &["--config", file.arg()],
        &[("RATELIMIT_DELTA_DELAY", "0ms")],
        "info",
    );
    let addr = service.addr();
    let load = Load::start(addr, 4);
    load.until_more(50).await;

    // A new file: the watch reloads it (no signal).
    std::fs::write(file.path(), good(200_000)).unwrap();
    let reloaded = ["configuration reloaded", "cause=\"file\""];
    tokio::task::block_in_place(|| service.wait_for_lines(&reloaded, 1));
    load.until_more(50).await;

    // A bad file (a typo in the secret's line): rejected, by the watch and
    // by SIGHUP, naming the line and field but never the value.
    let typo = "key_secret = \"reload-test-secret-0123456789";
    std::fs::write(file.path(), profile(1, typo)).unwrap();
    let rejected = ["configuration reload rejected", "cause=\"file\""];
    tokio::task::block_in_place(|| service.wait_for_lines(&rejected, 1));
    service.sighup();
    let rejected_hup = ["configuration reload rejected", "cause=\"sighup\""];
    tokio::task::block_in_place(|| service.wait_for_lines(&rejected_hup, 1));
    load.until_more(50).await;

    // A good file again, by SIGHUP (the watch may reload it too).
    std::fs::write(file.path(), good(300_000)).unwrap();
    service.sighup();
    let reloaded_hup = ["configuration reloaded", "cause=\"sighup\""];
    tokio::task::block_in_place(|| service.wait_for_lines(&reloaded_hup, 1));
    load.until_more(50).await;
    let seen = load.finish().await;

    assert!(
        seen.iter().all(|(status, _)| *status == 200),
        "no request failed: {:?}",
        seen.iter().filter(|(s, _)| *s != 200).collect::<Vec<_>>()
    );
    // Every answer took one request from one shared count: under each
    // limit in force, `limit - remaining` is the number of requests made
    // so far (at most the answers seen, at least those finished before
    // it): never a reset, which would start again near zero.
    let total = seen.len() as u64;
    for (i, (_, remaining)) in seen.iter().enumerate() {
        let limit = [100_000, 200_000, 300_000]
            .into_iter()
            .find(|limit| *limit > *remaining && limit - remaining <= total)
            .unwrap_or_else(|| panic!("answer {i}: remaining {remaining} fits no limit"));
        let used = limit - remaining;
        assert!(
            used + 8 > i as u64,
            "answer {i}: {used} used: a count was reset"
        );
    }
    // The last limit is in force, and counts all requests.
    let (_, last) = seen.last().unwrap();
    assert!(300_000 - last >= total - 4, "{last} after {total}");

    let log = service.lines().join("\n");
    assert!(log.contains("key_secret"), "the field is named: {log}");
    assert!(!log.contains(SECRET), "the secret is never logged");
    assert!(!log.contains("sk-reload"));
}
