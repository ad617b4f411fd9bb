//! Reloading the gateway profile in the real binary (memory backend):
//! under concurrent requests, a new file (seen by the file watch, then by
//! SIGHUP) changes the limits without resetting a count and without
//! failing a request; a bad file is rejected with an error that quotes no
//! secret, and the configuration in force keeps running.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// One request to the generate route.
async fn generate(client: &reqwest::Client, addr: std::net::SocketAddr) -> reqwest::Response {
    client
        .post(format!("http://{addr}/api/generate"))
        .header("content-type", "application/json")
        .body(r#"{"messages":[{"role":"user","content":"Hi"}]}"#)
        .send()
        .await
        .unwrap()
}

/// One answer: its status, its `requests` remaining, and two ticks of a
/// clock shared by all workers: when its request was sent, and when its
/// head came back.
#[derive(Debug, Clone, Copy)]
struct Answer {
    status: u16,
    remaining: u64,
    sent: u64,
    answered: u64,
}

/// Requests until told to stop, from `workers` tasks; every answer.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Answer>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let ticks = Arc::new(AtomicU64::new(0));
        let client = reqwest::Client::new();
        let tasks = (0..workers)
            .map(|_| {
                let (stop, seen, client) = (Arc::clone(&stop), Arc::clone(&seen), client.clone());
                let ticks = Arc::clone(&ticks);
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let sent = ticks.fetch_add(1, Ordering::SeqCst);
                        let res = generate(&client, addr).await;
                        let answered = ticks.fetch_add(1, Ordering::SeqCst);
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
                        seen.lock().unwrap().push(Answer {
                            status,
                            remaining,
                            sent,
                            answered,
                        });
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

    async fn finish(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(self.seen).unwrap().into_inner().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_keeps_counts_fails_nothing_and_rejects_a_bad_file() {
    // The "requests" window (1 h) must not turn under the counts.
    common::clear_of_window_edge(
        std::time::Duration::from_secs(3600),
        std::time::Duration::from_secs(120),
    )
    .await;
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
        seen.iter().all(|a| a.status == 200),
        "no request failed: {:?}",
        seen.iter().filter(|a| a.status != 200).collect::<Vec<_>>()
    );
    // Every answer took one request from one shared count, so under each
    // limit in force `limit - remaining` is the number of requests counted
    // so far. It is at least one more than the answers whose head came
    // back before this request was sent (they were counted before it), and
    // at most the requests sent before its head came back. A reset would
    // break the first bound: the count would start again near zero.
    let total = seen.len() as u64;
    for (i, answer) in seen.iter().enumerate() {
        let limit = [100_000, 200_000, 300_000]
            .into_iter()
            .find(|limit| *limit > answer.remaining && limit - answer.remaining <= total)
            .unwrap_or_else(|| panic!("answer {i}: {answer:?} fits no limit"));
        let used = limit - answer.remaining;
        let before = seen.iter().filter(|b| b.answered < answer.sent).count() as u64;
        let sent_before = seen.iter().filter(|b| b.sent < answer.answered).count() as u64;
        assert!(
            used > before,
            "answer {i} ({answer:?}): {used} used, {before} answered before it was sent: a count was reset"
        );
        assert!(
            used <= sent_before,
            "answer {i} ({answer:?}): {used} used, {sent_before} sent before its answer"
        );
    }
    // The last limit is in force, and counts every request: one more,
    // after all others ended, sees exactly `total + 1` used.
    let res = generate(&reqwest::Client::new(), addr).await;
    let last: u64 = res.headers()["x-ratelimit-remaining-requests"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(300_000 - last, total + 1, "{last} after {total}");

    let log = service.lines().join("\n");
    assert!(log.contains("key_secret"), "the field is named: {log}");
    assert!(!log.contains(SECRET), "the secret is never logged");
    assert!(!log.contains("sk-reload"));
}
