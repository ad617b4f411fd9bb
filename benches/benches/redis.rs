//! ratelimit-redis next to `redis-benchmark`, on one private `redis-server`
//! this bench starts on a free loopback port.
//!
//! Run with: `cargo bench -p ratelimit-benches --bench redis`
//!
//! `REDIS_BENCH_SECONDS` sets each measurement's length (default 2),
//! `REDIS_BENCH_ROUNDS` the number of paired runs behind each goal
//! (default 5), `REDIS_BENCH_MODES=batched,pipelined,pool` picks the
//! connection modes (default all three: batched is the default multiplexed
//! connection, pipelined the same with `max_batch = 1`), and
//! `REDIS_BENCH_RUNTIME=multi` runs the tasks on a two-worker tokio runtime
//! instead of the default current-thread one, and `REDIS_BENCH_GOAL_TASKS`
//! sets the tasks of the paired throughput runs (default 64; the
//! performance goal against `@upstash/ratelimit`'s ~60,000 decisions/s on
//! this machine is stated at 50).
//!
//! For each algorithm and connection mode, tasks check 10,000 keys (all
//! allowed) at 1, 16 and 64 concurrent tasks: decisions per second, p50/p99
//! latency, client commands per decision counted from `INFO commandstats`
//! (the commands the scripts run inside Redis are not round trips and are
//! left out), and the server's µs inside `FCALL` (the limiter's calls by
//! default) or `EVALSHA` (the scripts) per decision. Beside
//! them, `redis-benchmark` runs a minimal one-key Lua script (`INCR` +
//! `PEXPIRE`) by EVALSHA with `-c 1`, `-c 50` and `-c 50 -P 16` on the same
//! server in the same run.
//!
//! The goals are then judged on paired runs: each of ours right after the
//! `redis-benchmark` run it is compared with, several times, reporting the
//! median ratio and its range.
//!
//! Prints a Markdown table and the goals (see BENCHMARKS.md).

// This bench's output is its report.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratelimit_core::{Limiter, Policy};
use ratelimit_redis::{ConnectionMode, RedisLimiter, RedisOptions};

/// How the limiter reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Mode {
    /// The default: one multiplexed connection, concurrent requests
    /// batched into shared script calls.
    Batched,
    /// The multiplexed connection with `max_batch = 1`: one `EVALSHA` per
    /// decision, pipelined.
    Pipelined,
    /// A deadpool pool.
    Pool,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Batched => "batched",
            Self::Pipelined => "pipelined",
            Self::Pool => "pool",
        }
    }
}
use ratelimit_redis_harness::RedisServer;

const KEYS: usize = 10_000;
/// The one-key script `redis-benchmark` runs: the floor of a Lua decision.
const MINIMAL_SCRIPT: &str =
    "local v = redis.call('INCR', KEYS[1]) redis.call('PEXPIRE', KEYS[1], 60000) return v";
const CONCURRENCY: [usize; 3] = [1, 16, 64];
/// Commands only ever run by scripts inside Redis, and the bench's own.
const NOT_ROUND_TRIPS: [&str; 8] = [
    "mget",
    "time",
    "get",
    "set",
    "incr",
    "pexpire",
    "info",
    "config|resetstat",
];

struct Row {
    what: String,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    commands: Option<f64>,
    /// Share of one core the server used during the run.
    redis_cpu: Option<f64>,
    /// Server-side µs of script calls per decision.
    script_us: Option<f64>,
}

/// `@upstash/ratelimit`'s decisions per second measured on this machine
/// (50 concurrent calls against the same local Redis).
const UPSTASH_RATE: f64 = 60_000.0;

fn main() {
    let seconds: f64 = std::env::var("REDIS_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let measure = Duration::from_secs_f64(seconds);
    let server = RedisServer::start();
    let rt = match std::env::var("REDIS_BENCH_RUNTIME").as_deref() {
        Ok("multi") => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .expect("a tokio runtime builds");

    let mut rows = Vec::new();
    let requests = |rps_guess: f64| ((rps_guess * seconds) as u64).max(10_000);
    let baseline_c1 = redis_benchmark_row(&server, &["-c", "1"], requests(15_000.0));
    let baseline_c50 = redis_benchmark_row(&server, &["-c", "50"], requests(60_000.0));
    let baseline_p16 = redis_benchmark_row(&server, &["-c", "50", "-P", "16"], requests(200_000.0));

    let modes: Vec<Mode> = match std::env::var("REDIS_BENCH_MODES") {
        Ok(list) => list
            .split(',')
            .map(|m| match m.trim() {
                "batched" => Mode::Batched,
                "pipelined" => Mode::Pipelined,
                "pool" => Mode::Pool,
                other => panic!("unknown mode {other:?}: batched, pipelined or pool"),
            })
            .collect(),
        Err(_) => vec![Mode::Batched, Mode::Pipelined, Mode::Pool],
    };
    let rounds: usize = std::env::var("REDIS_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let goal_tasks: usize = std::env::var("REDIS_BENCH_GOAL_TASKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let mut commands = HashMap::new();
    for &mode in &modes {
        for policy in policies() {
            for tasks in CONCURRENCY {
                let row = rt.block_on(run(&server, policy, mode, tasks, measure));
                commands.insert((mode, policy.algorithm_name(), tasks), row.commands);
                rows.push(row);
            }
        }
    }
    // The client library's own floor: the minimal script by EVALSHA on one
    // redis-rs multiplexed connection, as ratelimit-redis sends its own.
    for tasks in [1, 64] {
        rows.push(rt.block_on(raw_redis_rs(&server, tasks, measure)));
    }
    let (c50, p16) = (baseline_c50.rate_and_p50(), baseline_p16.rate_and_p50());
    rows.push(baseline_c1);
    rows.push(baseline_c50);
    rows.push(baseline_p16);

    println!("| run | decisions/s | × rb -c 50 | p50 ms | p99 ms | commands/decision | server µs/decision | server CPU |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let commands = row.commands.map_or("–".to_string(), |c| format!("{c:.2}"));
        println!(
            "| {} | {:.0} | {:.2} | {:.3} | {:.3} | {commands} | {:.2} | {:.0} % |",
            row.what,
            row.rate,
            row.rate / c50.0,
            row.p50_ms,
            row.p99_ms,
            row.script_us.unwrap_or(f64::NAN),
            row.redis_cpu.unwrap_or(f64::NAN) * 100.0,
        );
    }
    println!("- (rb -c 50 -P 16: {:.0}/s, for scale)", p16.0);

    // The goals, judged on paired runs: each of ours right after the
    // redis-benchmark run it is compared with, `rounds` times, and the
    // median ratio, because the host's load moves both by ±30 % from one
    // run to the next.
    for mode in modes.iter().filter(|m| **m != Mode::Pool) {
        println!();
        println!(
            "Goals ({}, median of {rounds} paired runs, [min–max]):",
            mode.name()
        );
        for policy in policies() {
            let name = policy.algorithm_name();
            let mut speed = Vec::new();
            let mut upstash = Vec::new();
            let mut latency = Vec::new();
            for _ in 0..rounds {
                let rb = redis_benchmark_row(&server, &["-c", "50"], requests(60_000.0));
                let ours = rt.block_on(run(&server, policy, *mode, goal_tasks, measure));
                speed.push(ours.rate / rb.rate);
                upstash.push(ours.rate / UPSTASH_RATE);
                let rb = redis_benchmark_row(&server, &["-c", "1"], requests(15_000.0));
                let ours = rt.block_on(run(&server, policy, *mode, 1, measure));
                latency.push(ours.p50_ms / rb.p50_ms);
            }
            // One call (an FCALL by default) decides each request: alone
            // at one task, shared by several when batched.
            let one_1 = commands[&(*mode, name, 1)].unwrap_or(f64::NAN);
            let one_64 = commands[&(*mode, name, 64)].unwrap_or(f64::NAN);
            let one = (one_1 - 1.0).abs() < 0.01 && one_64 <= 1.0 + 1e-9;
            let (speed, latency) = (Spread::of(speed), Spread::of(latency));
            let upstash = Spread::of(upstash);
            println!(
                "- {name}: calls per decision {one_1:.2} at 1 task, {one_64:.3} at 64 \
                 (goal: one per decision at most): {}; {goal_tasks} tasks vs rb -c 50: {speed} \
                 (goal ≥ 1.5): {}; {goal_tasks} tasks vs 60,000/s (@upstash/ratelimit): \
                 {upstash} (goal ≥ 3): {}; 1 task p50 vs rb -c 1: {latency} (goal ≤ 1.2): {}",
                verdict(one),
                verdict(speed.median >= 1.5),
                verdict(upstash.median >= 3.0),
                verdict(latency.median <= 1.2)
            );
        }
    }
}

/// The median and range of some ratios.
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        Self {
            median: values[values.len() / 2],
            min: values[0],
            max: values[values.len() - 1],
        }
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2}× [{:.2}–{:.2}]", self.median, self.min, self.max)
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

impl Row {
    /// `(rate, p50_ms)`.
    fn rate_and_p50(&self) -> (f64, f64) {
        (self.rate, self.p50_ms)
    }
}

/// Limits far above what a run can take, so every decision is an admission.
fn policies() -> [Policy; 3] {
    [
        Policy::fixed_window(1_000_000, Duration::from_secs(60)).expect("valid"),
        Policy::sliding_window(1_000_000, Duration::from_secs(60)).expect("valid"),
        Policy::token_bucket(1_000_000, 1_000_000, Duration::from_secs(1)).expect("valid"),
    ]
}

async fn run(
    server: &RedisServer,
    policy: Policy,
    mode: Mode,
    tasks: usize,
    measure: Duration,
) -> Row {
    let mode_name = mode.name();
    let mut options = RedisOptions::standalone(server.url())
        .with_prefix(format!("bench-{mode_name}-{tasks}:"))
        .with_timeout(Duration::from_secs(2))
        .with_pool_size(std::num::NonZeroUsize::new(64).expect("64 is not zero"));
    options = match mode {
        Mode::Batched => options,
        Mode::Pipelined => {
            options.with_max_batch(std::num::NonZeroUsize::new(1).expect("1 is not zero"))
        }
        Mode::Pool => options.with_connection_mode(ConnectionMode::Pool),
    };
    let limiter = Arc::new(
        RedisLimiter::connect(policy, options)
            .await
            .expect("connect"),
    );
    let keys: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..KEYS)
            .map(|i| format!("user:{i}").into_bytes())
            .collect(),
    );

    // Warm up: connections, the pool, every key once.
    for key in keys.iter().take(KEYS / tasks.max(1)) {
        assert!(limiter.check_one(key).await.expect("warm-up").allowed);
    }
    let measurement = Measurement::start(server);
    let deadline = measurement.started + measure;
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let limiter = Arc::clone(&limiter);
            let keys = Arc::clone(&keys);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 16);
                let mut i = t * (KEYS / tasks.max(1));
                while Instant::now() < deadline {
                    let key = &keys[i % KEYS];
                    i += 1;
                    let at = Instant::now();
                    let d = limiter.check_one(key).await.expect("Redis decides");
                    latencies.push(at.elapsed());
                    assert!(d.allowed, "every decision is an admission");
                }
                latencies
            })
        })
        .collect();
    measurement
        .finish(
            server,
            format!(
                "ratelimit-redis {} {mode_name}, {tasks} task{}",
                policy.algorithm_name(),
                if tasks == 1 { "" } else { "s" }
            ),
            handles,
        )
        .await
}

/// CPU seconds the server has used (user + system).
fn redis_cpu_seconds(server: &RedisServer) -> f64 {
    server
        .cli(&["INFO", "cpu"])
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            matches!(name, "used_cpu_sys" | "used_cpu_user")
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Server-side µs in `FCALL` and `EVALSHA` (the Lua code's own cost) since
/// the last reset.
fn script_usec(server: &RedisServer) -> f64 {
    match (
        server.command_stat("fcall", "usec"),
        server.command_stat("evalsha", "usec"),
    ) {
        (None, None) => f64::NAN,
        (a, b) => a.unwrap_or(0.0) + b.unwrap_or(0.0),
    }
}

/// The minimal script through redis-rs alone, `tasks` at a time.
async fn raw_redis_rs(server: &RedisServer, tasks: usize, measure: Duration) -> Row {
    let client = redis::Client::open(server.url()).expect("a valid URL");
    let connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let script = Arc::new(redis::Script::new(MINIMAL_SCRIPT));
    let measurement = Measurement::start(server);
    let deadline = measurement.started + measure;
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let mut connection = connection.clone();
            let script = Arc::clone(&script);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 16);
                let mut i = t * (KEYS / tasks.max(1));
                while Instant::now() < deadline {
                    let key = format!("raw:{}", i % KEYS);
                    i += 1;
                    let at = Instant::now();
                    let _: i64 = script
                        .key(key)
                        .invoke_async(&mut connection)
                        .await
                        .expect("Redis answers");
                    latencies.push(at.elapsed());
                }
                latencies
            })
        })
        .collect();
    measurement
        .finish(
            server,
            format!(
                "redis-rs alone, EVALSHA INCR+PEXPIRE, {tasks} task{}",
                if tasks == 1 { "" } else { "s" }
            ),
            handles,
        )
        .await
}

/// One measured run: the server's counters are reset at its start and
/// read at its end.
struct Measurement {
    started: Instant,
    cpu_before: f64,
}

impl Measurement {
    fn start(server: &RedisServer) -> Self {
        let _ = server.cli(&["CONFIG", "RESETSTAT"]);
        Self {
            cpu_before: redis_cpu_seconds(server),
            started: Instant::now(),
        }
    }

    /// Waits for the bench tasks (each returns its latencies) and makes
    /// the run's row.
    async fn finish(
        self,
        server: &RedisServer,
        what: String,
        tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>,
    ) -> Row {
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.expect("a bench task finishes"));
        }
        let elapsed = self.started.elapsed();
        summarize(
            what,
            latencies,
            elapsed,
            client_commands(server),
            self.redis_cpu(server),
            script_usec(server),
        )
    }

    /// The share of one core the server has used since the start.
    fn redis_cpu(&self, server: &RedisServer) -> f64 {
        (redis_cpu_seconds(server) - self.cpu_before) / self.started.elapsed().as_secs_f64()
    }
}

/// A row from the latencies of one run.
fn summarize(
    what: String,
    mut latencies: Vec<Duration>,
    elapsed: Duration,
    commands: f64,
    redis_cpu: f64,
    script_usec: f64,
) -> Row {
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let decisions = latencies.len() as f64;
    Row {
        what,
        rate: decisions / elapsed.as_secs_f64(),
        p50_ms: pct(0.50).as_secs_f64() * 1e3,
        p99_ms: pct(0.99).as_secs_f64() * 1e3,
        commands: Some(commands / decisions),
        redis_cpu: Some(redis_cpu),
        script_us: Some(script_usec / decisions),
    }
}

/// Client commands since the last `CONFIG RESETSTAT`.
fn client_commands(server: &RedisServer) -> f64 {
    server
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let calls: f64 = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            (!NOT_ROUND_TRIPS.contains(&name)).then_some(calls)
        })
        .sum()
}

/// `redis-benchmark` running EVALSHA of `INCR` + `PEXPIRE` on 10,000 keys.
fn redis_benchmark_row(server: &RedisServer, extra: &[&str], requests: u64) -> Row {
    let sha = server.cli(&["SCRIPT", "LOAD", MINIMAL_SCRIPT]);
    let measurement = Measurement::start(server);
    let (n, keys) = (requests.to_string(), KEYS.to_string());
    let mut args = extra.to_vec();
    args.extend([
        "-n",
        &n,
        "-r",
        &keys,
        "EVALSHA",
        &sha,
        "1",
        "rb:__rand_int__",
    ]);
    let summary = server.benchmark(&args);
    let redis_cpu = measurement.redis_cpu(server);
    Row {
        what: format!("redis-benchmark EVALSHA INCR+PEXPIRE {}", extra.join(" ")),
        rate: summary.requests_per_second,
        p50_ms: summary.p50_ms,
        p99_ms: summary.p99_ms,
        commands: None,
        redis_cpu: Some(redis_cpu),
        // One decision per call.
        script_us: Some(script_usec(server) / requests as f64),
    }
}
