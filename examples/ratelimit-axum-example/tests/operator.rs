//! What a client and an operator see when Redis fails, over real sockets:
//! the compiled service, a private `redis-server` from
//! `ratelimit-redis-harness` (never 6379), the metrics endpoint on.
//!
//! Each scenario runs two service processes on one Redis, one with
//! `failure = "closed"` and one with `failure = "open"`, under load from
//! a few concurrent clients each, and checks:
//!
//! - clients: under `closed` a `503` (never a `429`) with `Retry-After` and
//!   no quota headers; under `open` a `200` with no quota headers;
//! - logs: exactly one WARN line for the start of the outage, with its
//!   cause, and exactly one INFO line for its end;
//! - metrics: `ratelimit_degraded_decisions_total` rises during the outage;
//! - after it: quota headers again, and one count shared by both processes
//!   (so the decisions come from Redis, not from a process's memory).
//!
//! `failure = "fallback"` is checked on its own: a count per process (a
//! `429` when it is over, still no quota headers), the fallback's keys in
//! `ratelimit_memory_keys`, and Redis's own count once it appears.
//!
//! Needs `redis-server` and `redis-cli` on PATH (`apt-get install -y
//! redis-server`).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{ConfigFile, Process};
use common::PLAIN_BODY;
use ratelimit_redis_harness::{free_port, RedisServer};

/// How long any one condition may take to come true.
const DEADLINE: Duration = Duration::from_secs(15);

/// The failure-log lines of `ratelimit-layers`' `Failover`.
const OUTAGE_STARTS: &str = "rate-limit store cannot decide: decisions are degraded";
const OUTAGE_ENDS: &str = "rate-limit store deciding again: decisions are no longer degraded";

/// The other WARN lines an outage may bring, each at most once: the
/// breaker opening, and a lazy connection's first failure.
const OTHER_WARNINGS: [&str; 2] = [
    "rate-limit store failing: circuit breaker opened",
    "cannot connect to Redis yet",
];

/// One service process, its log collected line by line as it is written.
struct Instance {
    process: Process,
    addr: SocketAddr,
    metrics: String,
}

/// The configuration of one instance: a limit the load never reaches, a
/// short breaker so probes come often, and a timeout long enough that a
/// busy machine never mistakes a healthy Redis for a failed one (which
/// would add outages to the count of log lines).
fn config(port: u16, failure: &str, extra_backend: &str) -> String {
    format!(
        r#"
[limit]
algorithm = "fixed_window"
rate = "1000000/1d"

[backend]
kind = "redis"
url = "redis://127.0.0.1:{port}"
failure = "{failure}"
timeout = "1s"
breaker = {{ failure_threshold = 3, open_for = "300ms" }}
{extra_backend}

[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[model]
delta_delay = "0ms"

[metrics]
bind = "127.0.0.1:0"
"#
    )
}

impl Instance {
    /// Starts the binary on `config_text`; returns once it listens.
    fn start(name: &'static str, config_text: &str) -> Self {
        let config = ConfigFile::new(&format!("operator-{name}"), config_text);
        let mut process = Process::start(&["--config", config.arg()], &[], "info");
        let metrics = process.wait_for_field("serving Prometheus metrics", "url");
        let addr = process.addr();
        Self {
            process,
            addr,
            metrics,
        }
    }

    /// The lines at `level` containing `needle`.
    fn lines(&self, level: &str, needle: &str) -> Vec<String> {
        self.process
            .lines()
            .into_iter()
            .filter(|l| l.contains(&format!(" {level} ")) && l.contains(needle))
            .collect()
    }

    /// The log without the line per request, for failure messages.
    /// Every WARN line is one the outage explains, each logged once: an
    /// outage is a few lines, not one per request.
    fn check_warnings(&self) {
        let log = self.log_text();
        assert_eq!(self.lines("WARN", OUTAGE_STARTS).len(), 1, "{log}");
        for known in OTHER_WARNINGS {
            assert!(self.lines("WARN", known).len() <= 1, "{known}:\n{log}");
        }
        for line in self.lines("WARN", "") {
            assert!(
                line.contains(OUTAGE_STARTS) || OTHER_WARNINGS.iter().any(|k| line.contains(k)),
                "an unexplained WARN: {line}"
            );
        }
    }

    fn log_text(&self) -> String {
        let lines = self.process.lines();
        let kept: Vec<&str> = lines
            .iter()
            .filter(|l| !l.contains("tower_http::trace::on_response"))
            .map(String::as_str)
            .collect();
        kept.join("\n")
    }

    /// The sum of the samples of `metric` whose labels contain `labels`,
    /// scraped from the metrics endpoint now.
    async fn metric(&self, client: &reqwest::Client, metric: &str, labels: &str) -> f64 {
        let res = client.get(&self.metrics).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let text = res.text().await.unwrap();
        text.lines()
            .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(labels))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    }

    /// `ratelimit_degraded_decisions_total{failure=<policy>}`.
    async fn degraded(&self, client: &reqwest::Client, policy: &str) -> f64 {
        self.metric(
            client,
            "ratelimit_degraded_decisions_total",
            &format!("failure=\"{policy}\""),
        )
        .await
    }
}

/// What a client saw in one answer.
#[derive(Debug, Clone)]
struct Seen {
    status: u16,
    retry_after: bool,
    /// Any of `RateLimit`, `RateLimit-Policy`, `X-RateLimit-*`.
    quota_headers: bool,
    remaining: Option<u64>,
}

impl Seen {
    fn is_outage_answer(&self, failure: &str) -> bool {
        match failure {
            "closed" => self.status == 503,
            "open" => self.status == 200 && !self.quota_headers,
            other => unreachable!("{other}"),
        }
    }

    fn is_redis_answer(&self) -> bool {
        self.status == 200 && self.quota_headers && self.remaining.is_some()
    }
}

/// One `POST /api/generate` as client `ip`, its body read to the end.
async fn post(client: &reqwest::Client, addr: SocketAddr, ip: &str) -> Seen {
    let res = client
        .post(format!("http://{addr}/api/generate"))
        .header("content-type", "application/json")
        .header("x-forwarded-for", ip)
        .body(PLAIN_BODY)
        .send()
        .await
        .unwrap();
    let headers = res.headers();
    let seen = Seen {
        status: res.status().as_u16(),
        retry_after: headers.contains_key("retry-after"),
        quota_headers: headers.keys().any(|name| {
            let name = name.as_str();
            name == "ratelimit" || name == "ratelimit-policy" || name.starts_with("x-ratelimit-")
        }),
        remaining: headers
            .get("x-ratelimit-remaining")
            .map(|v| v.to_str().unwrap().parse().unwrap()),
    };
    res.bytes().await.unwrap();
    seen
}

/// Polls `probe` until it returns `Some`, for at most [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A few clients of each instance sending requests in a loop until
/// stopped, every answer recorded.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<(&'static str, Arc<Mutex<Vec<Seen>>>)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the clients; returns once each has had its first answer:
    /// from Redis if `redis_up`, else the failure policy's.
    async fn start(instances: &[(&Instance, &'static str)], redis_up: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        let mut tasks = Vec::new();
        for (instance, failure) in instances {
            for client_no in 0..3 {
                let stop = Arc::clone(&stop);
                let seen = Arc::new(Mutex::new(Vec::new()));
                clients.push((*failure, Arc::clone(&seen)));
                let addr = instance.addr;
                let ip = format!("198.51.100.{client_no}");
                tasks.push(tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    while !stop.load(Ordering::Relaxed) {
                        let answer = post(&client, addr, &ip).await;
                        seen.lock().unwrap().push(answer);
                        // Pacing, not a wait for anything: a steady
                        // trickle rather than a flood of two cores.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }));
            }
        }
        let load = Self {
            stop,
            clients,
            tasks,
        };
        eventually("every client answered", || async {
            load.clients
                .iter()
                .all(|(failure, seen)| {
                    seen.lock().unwrap().iter().any(|s| match redis_up {
                        true => s.is_redis_answer(),
                        false => s.is_outage_answer(failure),
                    })
                })
                .then_some(())
        })
        .await;
        load
    }

    /// Stops the clients and checks every answer they got: from Redis
    /// (200 with quota headers) or the failure policy's, and an answer of
    /// the outage for every client, so each was under load through it.
    async fn finish(self) {
        eventually("every client answered from Redis again", || async {
            self.clients
                .iter()
                .all(|(failure, seen)| {
                    let seen = seen.lock().unwrap();
                    let last_outage = seen.iter().rposition(|s| s.is_outage_answer(failure));
                    let last_redis = seen.iter().rposition(Seen::is_redis_answer);
                    last_redis > last_outage
                })
                .then_some(())
        })
        .await;
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        for (failure, seen) in self.clients {
            let seen = seen.lock().unwrap();
            for s in seen.iter() {
                assert_ne!(s.status, 429, "{failure}: an outage is not a 429: {s:?}");
                assert!(
                    s.is_redis_answer() || s.is_outage_answer(failure),
                    "{failure}: an answer neither from Redis nor the failure policy: {s:?}"
                );
                if failure == "closed" && s.status == 503 {
                    assert!(s.retry_after, "a 503 says when to retry: {s:?}");
                    assert!(!s.quota_headers, "a 503 invents no quota: {s:?}");
                }
            }
            assert!(
                seen.iter().any(|s| s.is_outage_answer(failure)),
                "{failure}: a client saw no outage answer among {}",
                seen.len()
            );
        }
    }
}

/// The two instances on one Redis, `closed` and `open`.
struct Pair {
    closed: Instance,
    open: Instance,
    client: reqwest::Client,
}

impl Pair {
    fn start(port: u16, closed_extra: &str) -> Self {
        Self {
            closed: Instance::start("closed", &config(port, "closed", closed_extra)),
            open: Instance::start("open", &config(port, "open", "")),
            client: reqwest::Client::new(),
        }
    }

    fn both(&self) -> [(&Instance, &'static str); 2] {
        [(&self.closed, "closed"), (&self.open, "open")]
    }

    /// Waits until both answer from Redis.
    async fn wait_for_redis(&self) {
        for (instance, failure) in self.both() {
            eventually(&format!("{failure}: an answer from Redis"), || async {
                post(&self.client, instance.addr, "192.0.2.1")
                    .await
                    .is_redis_answer()
                    .then_some(())
            })
            .await;
        }
    }

    /// Waits for the outage to show to clients and checks what they get.
    async fn wait_for_outage(&self) {
        let closed = eventually("closed: a 503", || async {
            let s = post(&self.client, self.closed.addr, "192.0.2.2").await;
            (s.status != 200 || !s.quota_headers).then_some(s)
        })
        .await;
        assert_eq!(
            closed.status, 503,
            "fail closed is a 503, not a 429: {closed:?}"
        );
        assert!(closed.retry_after, "{closed:?}");
        assert!(!closed.quota_headers, "no invented quota: {closed:?}");

        let open = eventually("open: a 200 without quota headers", || async {
            let s = post(&self.client, self.open.addr, "192.0.2.2").await;
            (!s.quota_headers).then_some(s)
        })
        .await;
        assert_eq!(open.status, 200, "{open:?}");
    }

    /// The operator's view of the outage: the degraded-decisions counter
    /// is up and still rising, and one WARN line says why.
    async fn check_operator_sees_outage(&self) {
        for (instance, failure) in self.both() {
            let before = instance.degraded(&self.client, failure).await;
            assert!(before > 0.0, "{failure}: degraded decisions counted");
            eventually(&format!("{failure}: degraded decisions rising"), || async {
                post(&self.client, instance.addr, "192.0.2.3").await;
                (instance.degraded(&self.client, failure).await > before).then_some(())
            })
            .await;
            let decisions = instance
                .metric(
                    &self.client,
                    "ratelimit_decisions_total",
                    "outcome=\"degraded\"",
                )
                .await;
            assert!(decisions > 0.0, "{failure}: decisions counted by outcome");
            let warns = instance.lines("WARN", OUTAGE_STARTS);
            assert_eq!(warns.len(), 1, "{failure}:\n{}", instance.log_text());
            assert!(
                warns[0].contains("error=") && warns[0].contains(&format!("failure={failure}")),
                "the cause and the policy: {}",
                warns[0]
            );
        }
    }

    /// After recovery: exactly one WARN and one INFO per instance, quota
    /// headers again, and one count shared by both instances.
    async fn check_recovered(&self, client_ip: &str, redis: &RedisServer) {
        for (instance, failure) in self.both() {
            eventually(&format!("{failure}: the recovery logged"), || async {
                (!instance.lines("INFO", OUTAGE_ENDS).is_empty()).then_some(())
            })
            .await;
        }
        let a = post(&self.client, self.closed.addr, client_ip).await;
        let b = post(&self.client, self.open.addr, client_ip).await;
        let c = post(&self.client, self.closed.addr, client_ip).await;
        let remaining: Vec<_> = [&a, &b, &c].iter().map(|s| s.remaining).collect();
        let first = a.remaining.expect("quota headers are back");
        assert_eq!(
            remaining,
            [Some(first), Some(first - 1), Some(first - 2)],
            "one count in Redis, shared by both instances"
        );
        let keys = redis.cli(&["KEYS", &format!("*{client_ip}*")]);
        assert!(!keys.is_empty(), "the count is in Redis");
        for (instance, failure) in self.both() {
            instance.check_warnings();
            let log = instance.log_text();
            assert_eq!(
                instance.lines("WARN", OUTAGE_STARTS).len(),
                1,
                "{failure}:\n{log}"
            );
            assert_eq!(
                instance.lines("INFO", OUTAGE_ENDS).len(),
                1,
                "{failure}:\n{log}"
            );
            assert!(
                !log.contains(" ERROR "),
                "{failure}: an outage is not an error:\n{log}"
            );
        }
    }
}

// Redis killed and restarted: after it comes back, the first call must
// not fail on a connection left over from before (the removed lean
// connection did, logging the outage twice: WARN, INFO, WARN, INFO).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load() {
    let mut redis = RedisServer::start();
    let pair = Pair::start(redis.port(), "");
    pair.wait_for_redis().await;
    let load = Load::start(&pair.both(), true).await;

    redis.stop();
    pair.wait_for_outage().await;
    pair.check_operator_sees_outage().await;

    redis.restart();
    pair.wait_for_redis().await;
    load.finish().await;
    pair.check_recovered("203.0.113.1", &redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_under_load_then_thawed() {
    let redis = RedisServer::start();
    let pair = Pair::start(redis.port(), "");
    pair.wait_for_redis().await;
    let load = Load::start(&pair.both(), true).await;

    redis.pause();
    pair.wait_for_outage().await;
    pair.check_operator_sees_outage().await;

    redis.resume();
    pair.wait_for_redis().await;
    load.finish().await;
    pair.check_recovered("203.0.113.2", &redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_memory_under_load_then_restored() {
    let redis = RedisServer::start();
    let pair = Pair::start(redis.port(), "");
    pair.wait_for_redis().await;
    let load = Load::start(&pair.both(), true).await;

    assert_eq!(
        redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]),
        "OK"
    );
    assert_eq!(redis.cli(&["CONFIG", "SET", "maxmemory", "1"]), "OK");
    pair.wait_for_outage().await;
    pair.check_operator_sees_outage().await;

    assert_eq!(redis.cli(&["CONFIG", "SET", "maxmemory", "0"]), "OK");
    pair.wait_for_redis().await;
    load.finish().await;
    pair.check_recovered("203.0.113.3", &redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_while_redis_is_absent_then_redis_appears() {
    let port = free_port();
    // `open` starts without Redis by default; `closed` only when asked.
    let pair = Pair::start(port, "start_degraded = true");
    for (instance, failure) in pair.both() {
        eventually(
            &format!("{failure}: the failed connection logged"),
            || async {
                (!instance
                    .lines("WARN", "cannot connect to Redis yet")
                    .is_empty())
                .then_some(())
            },
        )
        .await;
    }
    let load = Load::start(&pair.both(), false).await;
    pair.wait_for_outage().await;
    pair.check_operator_sees_outage().await;

    let redis = RedisServer::start_on(port, &[]);
    pair.wait_for_redis().await;
    load.finish().await;
    pair.check_recovered("203.0.113.4", &redis).await;
    for (instance, failure) in pair.both() {
        let log = instance.log_text();
        let failed = instance.lines("WARN", "cannot connect to Redis yet");
        assert_eq!(
            failed.len(),
            1,
            "{failure}: one line, not one per retry:\n{log}"
        );
        let connected = instance.lines("INFO", "connected to Redis");
        assert_eq!(connected.len(), 1, "{failure}:\n{log}");
    }
}

#[test]
fn closed_without_start_degraded_refuses_to_start_without_redis() {
    let port = free_port();
    let path = std::env::temp_dir().join(format!(
        "ratelimit-operator-{}-refuse-{port}.toml",
        std::process::id()
    ));
    std::fs::write(&path, config(port, "closed", "")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ratelimit-axum-example"))
        .args(["--bind", "127.0.0.1:0", "--config"])
        .arg(&path)
        .env_remove("REDIS_URL")
        .env_remove("OPENAI_API_KEY")
        .env_remove("RATELIMIT_FAILURE")
        .output()
        .unwrap();
    std::fs::remove_file(&path).ok();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot start the Redis backend"), "{err}");
    assert!(
        err.contains("start_degraded = true"),
        "says how to start anyway: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_counts_in_this_process_while_redis_is_absent() {
    let port = free_port();
    let text = config(port, "fallback", "").replace("1000000/1d", "3/1d");
    let instance = Instance::start("fallback", &text);
    let client = reqwest::Client::new();
    let ip = "203.0.113.5";

    // The process's own count: three allowed, without quota headers
    // (they would describe one instance's share as the whole limit)...
    for _ in 0..3 {
        let s = post(&client, instance.addr, ip).await;
        assert_eq!((s.status, s.quota_headers), (200, false), "{s:?}");
    }
    // ...then a real denial of that count: a 429, not a 503.
    let s = post(&client, instance.addr, ip).await;
    assert_eq!(s.status, 429, "{s:?}");
    assert!(s.retry_after && !s.quota_headers, "{s:?}");
    assert_eq!(instance.degraded(&client, "fallback").await, 4.0);
    let keys = instance
        .metric(&client, "ratelimit_memory_keys", "limiter=\"fallback\"")
        .await;
    assert_eq!(keys, 1.0, "the fallback holds the one client's key");

    // Redis appears: its own count, from the start, with quota headers.
    let redis = RedisServer::start_on(port, &[]);
    let s = eventually("an answer from Redis", || async {
        let s = post(&client, instance.addr, ip).await;
        s.is_redis_answer().then_some(s)
    })
    .await;
    assert_eq!(s.remaining, Some(2), "Redis counts afresh: {s:?}");
    assert!(!redis.cli(&["KEYS", &format!("*{ip}*")]).is_empty());
    instance.check_warnings();
    eventually("the recovery logged", || async {
        (instance.lines("INFO", OUTAGE_ENDS).len() == 1).then_some(())
    })
    .await;
}
